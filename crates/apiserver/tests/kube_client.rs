//! kube-rs against a started apiserver, on the embedded store and on a private etcd:
//! CRUD, selectors, paging, watch resume, 409 on stale updates, 410 after compaction,
//! validation errors, endpoints following pods, durability across restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Backend, TestServer, eventually};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

fn pod(name: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "ports": [{"name": "http", "containerPort": 8080}]}]}
    }))
    .unwrap()
}

fn service(name: &str, app: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": app}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}
    }))
    .unwrap()
}

async fn crud_and_selectors(backend: Backend) {
    let ts = TestServer::start(backend).await;
    let client = ts.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let default = namespaces.get("default").await.unwrap();
    assert_eq!(default.status.unwrap().phase.as_deref(), Some("Active"));

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("web-0", "web"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    assert_eq!(
        created.spec.as_ref().unwrap().restart_policy.as_deref(),
        Some("Always")
    );
    pods.create(&PostParams::default(), &pod("web-1", "web"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("db-0", "db"))
        .await
        .unwrap();

    let web = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let names: Vec<_> = web
        .items
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, vec!["web-0", "web-1"]);
    let not_web = pods
        .list(&ListParams::default().labels("app!=web"))
        .await
        .unwrap();
    assert_eq!(not_web.items.len(), 1);
    let by_name = pods
        .list(&ListParams::default().fields("metadata.name=db-0"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);

    // Paging: two pages of at most two, then the rest.
    let page1 = pods.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page1.items.len(), 2);
    let token = page1.metadata.continue_.clone().expect("a continue token");
    let page2 = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(page2.items.len(), 1);
    assert!(page2.metadata.continue_.is_none());

    // Stale update: 409 Conflict. The scheduler writes web-0 once (this server has no
    // nodes: PodScheduled False, Unschedulable); wait for that write so the only writes
    // racing below are the test's own.
    eventually(
        "the scheduler marked web-0",
        Duration::from_secs(10),
        || async {
            let p = pods.get("web-0").await.map_err(|e| e.to_string())?;
            let conditions = p.status.and_then(|s| s.conditions).unwrap_or_default();
            conditions
                .iter()
                .find(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable"))
                .map(|_| ())
                .ok_or_else(|| format!("conditions: {conditions:?}"))
        },
    )
    .await;
    let mut stale = pods.get("web-0").await.unwrap();
    let mut fresh = stale.clone();
    fresh
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("tier".into(), "front".into());
    pods.replace("web-0", &PostParams::default(), &fresh)
        .await
        .unwrap();
    stale
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("tier".into(), "back".into());
    let err = pods
        .replace("web-0", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409, "{s:?}");
            assert!(
                s.message.contains("the object has been modified"),
                "{}",
                s.message
            );
        }
        other => panic!("expected 409, got {other:?}"),
    }

    // Merge patch of labels, as kubectl label does.
    let patched = pods
        .patch(
            "web-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": null, "env": "prod"}}})),
        )
        .await
        .unwrap();
    let labels = patched.metadata.labels.unwrap();
    assert_eq!(labels.get("env").map(String::as_str), Some("prod"));
    assert!(!labels.contains_key("tier"));

    // Delete of an unscheduled pod is immediate.
    pods.delete("db-0", &DeleteParams::default()).await.unwrap();
    let err = pods.get("db-0").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404 && s.message == "pods \"db-0\" not found"),
        "{err:?}"
    );
    ts.stop().await;
}

#[tokio::test]
async fn crud_and_selectors_embedded() {
    crud_and_selectors(Backend::Embedded).await;
}

#[tokio::test]
async fn crud_and_selectors_etcd() {
    crud_and_selectors(Backend::Etcd).await;
}

async fn watch_resume_and_gone(backend: Backend) {
    let ts = TestServer::start(backend).await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("w", "web"))
        .await
        .unwrap();
    let from = created.metadata.resource_version.clone().unwrap();
    for tier in ["a", "b"] {
        pods.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": tier}}})),
        )
        .await
        .unwrap();
    }
    pods.delete("w", &DeleteParams::default()).await.unwrap();

    // Resuming from the create's version replays every later change, in order (the
    // scheduler may also write the pod's conditions in between; those carry no tier).
    let stream = pods
        .watch(&WatchParams::default().timeout(10), &from)
        .await
        .unwrap()
        .boxed();
    let events: Vec<_> = tokio::time::timeout(
        Duration::from_secs(10),
        stream
            .take_while(|e| futures::future::ready(!matches!(e, Ok(WatchEvent::Deleted(_)))))
            .try_collect::<Vec<_>>(),
    )
    .await
    .expect("the watch replays up to the delete")
    .unwrap();
    let mut tiers: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Modified(p) => p.metadata.labels.as_ref().unwrap().get("tier").cloned(),
            WatchEvent::Added(_) => Some("ADDED".to_owned()),
            _ => None,
        })
        .collect();
    tiers.dedup();
    assert_eq!(tiers, vec!["a", "b"]);

    // After compaction the old version is gone: 410 on the watch and on an exact list.
    let now = ts.server().store().current_revision().await.unwrap();
    ts.server().store().compact(now).await.unwrap();
    let mut stream = pods
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!(e.code, 410, "{e:?}"),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    let exact = ListParams::default()
        .at(&from)
        .matching(kube::api::VersionMatch::Exact);
    match pods.list(&exact).await.unwrap_err() {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired"), "{s:?}"),
        other => panic!("expected 410, got {other:?}"),
    }

    // Bookmarks, on request, carry a resourceVersion to resume from.
    let current = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(10), &current)
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(
        matches!(first, Some(Ok(WatchEvent::Bookmark(_)))),
        "{first:?}"
    );
    ts.stop().await;
}

#[tokio::test]
async fn watch_resume_and_gone_embedded() {
    watch_resume_and_gone(Backend::Embedded).await;
}

#[tokio::test]
async fn watch_resume_and_gone_etcd() {
    watch_resume_and_gone(Backend::Etcd).await;
}

#[tokio::test]
async fn invalid_objects_are_refused_with_the_field_named() {
    let ts = TestServer::start(Backend::Embedded).await;
    let services: Api<Service> = Api::namespaced(ts.client(), "default");
    let mut bad = service("Bad_Name", "web");
    bad.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 70000;
    match services
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{s:?}");
            assert!(
                s.message.starts_with("Service \"Bad_Name\" is invalid: "),
                "{}",
                s.message
            );
            assert!(
                s.message
                    .contains("spec.ports[0].port: Invalid value: 70000"),
                "{}",
                s.message
            );
            assert!(
                s.message
                    .contains("metadata.name: Invalid value: \"Bad_Name\""),
                "{}",
                s.message
            );
        }
        other => panic!("expected 422, got {other:?}"),
    }
    let in_missing_ns: Api<Pod> = Api::namespaced(ts.client(), "nope");
    match in_missing_ns
        .create(&PostParams::default(), &pod("p", "x"))
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => assert_eq!(
            (s.code, s.message.as_str()),
            (404, "namespaces \"nope\" not found")
        ),
        other => panic!("expected 404, got {other:?}"),
    }
    ts.stop().await;
}

#[tokio::test]
async fn endpoints_follow_pod_readiness() {
    let ts = TestServer::start(Backend::Embedded).await;
    let client = ts.client();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let svc = services
        .create(&PostParams::default(), &service("web", "web"))
        .await
        .unwrap();
    let ip = svc.spec.unwrap().cluster_ip.unwrap();
    assert!(
        ip.starts_with("10.9") || ip.starts_with("10.10") || ip.starts_with("10.11"),
        "{ip}"
    );
    pods.create(&PostParams::default(), &pod("web-0", "web"))
        .await
        .unwrap();
    let status = json!({"status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
        "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status("web-0", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    eventually(
        "the ready pod is an endpoint on its named port",
        Duration::from_secs(10),
        || {
            let endpoints = endpoints.clone();
            async move {
                let ep = endpoints.get("web").await.map_err(|e| e.to_string())?;
                let subsets = ep.subsets.unwrap_or_default();
                let ok = subsets.len() == 1
                    && subsets[0]
                        .addresses
                        .as_ref()
                        .is_some_and(|a| a.len() == 1 && a[0].ip == "10.244.1.5")
                    && subsets[0].ports.as_ref().is_some_and(|p| p[0].port == 8080);
                if ok {
                    Ok(())
                } else {
                    Err(format!("{subsets:?}"))
                }
            }
        },
    )
    .await;
    let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    pods.patch_status("web-0", &PatchParams::default(), &Patch::Merge(not_ready))
        .await
        .unwrap();
    eventually(
        "the unready pod moves to notReadyAddresses",
        Duration::from_secs(10),
        || {
            let endpoints = endpoints.clone();
            async move {
                let ep = endpoints.get("web").await.map_err(|e| e.to_string())?;
                let subsets = ep.subsets.unwrap_or_default();
                let ok = subsets.len() == 1
                    && subsets[0].addresses.as_ref().is_none_or(Vec::is_empty)
                    && subsets[0]
                        .not_ready_addresses
                        .as_ref()
                        .is_some_and(|a| a.len() == 1);
                if ok {
                    Ok(())
                } else {
                    Err(format!("{subsets:?}"))
                }
            }
        },
    )
    .await;
    ts.stop().await;
}

#[tokio::test]
async fn objects_survive_a_restart_on_the_embedded_store() {
    let mut ts = TestServer::start(Backend::Embedded).await;
    let services: Api<Service> = Api::namespaced(ts.client(), "default");
    let created = services
        .create(&PostParams::default(), &service("keep", "x"))
        .await
        .unwrap();
    ts.restart().await;
    let services: Api<Service> = Api::namespaced(ts.client(), "default");
    let again = services.get("keep").await.unwrap();
    assert_eq!(again.metadata.uid, created.metadata.uid);
    assert_eq!(
        again.spec.unwrap().cluster_ip,
        created.spec.unwrap().cluster_ip
    );
    ts.stop().await;
}
