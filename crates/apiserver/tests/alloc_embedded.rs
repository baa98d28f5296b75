//! The allocators on the embedded (redb, fsync per commit) store: 1,000 concurrent Services
//! get distinct ClusterIPs and NodePorts, and allocations survive reopening the store.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use podnet_apiserver::alloc::{AllocatorConfig, Allocators};
use podnet_store::{EmbeddedOptions, EmbeddedStore, Store};
use serde_json::{Value, json};

fn svc(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

async fn open(path: &Path) -> Arc<dyn Store> {
    // The file is released when the previous store's last reference (and its background
    // tasks) are gone; give those a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match EmbeddedStore::open(path, EmbeddedOptions::default()).await {
            Ok(store) => return Arc::new(store),
            Err(e) if Instant::now() < deadline => {
                eprintln!("reopening: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("opening {}: {e}", path.display()),
        }
    }
}

async fn count(store: &Arc<dyn Store>, prefix: &str) -> usize {
    store.list(prefix, None).await.unwrap().items.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_services_get_distinct_ips_and_ports() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store.redb")).await;
    let alloc = Arc::new(Allocators::new(store.clone(), AllocatorConfig::default()));
    let started = Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let alloc = alloc.clone();
            tokio::spawn(async move {
                let mut s = svc(
                    &format!("s{i}"),
                    json!({"type": "NodePort", "ports": [{"port": 80}]}),
                );
                alloc.allocate_service(&mut s, None).await.unwrap();
                (
                    s["spec"]["clusterIP"].as_str().unwrap().to_owned(),
                    s["spec"]["ports"][0]["nodePort"].as_i64().unwrap(),
                )
            })
        })
        .collect();
    let (mut ips, mut ports) = (HashSet::new(), HashSet::new());
    for t in tasks {
        let (ip, port) = t.await.unwrap();
        ips.insert(ip);
        ports.insert(port);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "1000 concurrent Service allocations (ClusterIP + NodePort, embedded store): {elapsed:?}"
    );
    assert_eq!(ips.len(), 1000);
    assert_eq!(ports.len(), 1000);
    assert_eq!(
        count(&store, "/registry/allocations/serviceips/").await,
        1000
    );
    assert_eq!(
        count(&store, "/registry/allocations/nodeports/").await,
        1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let cfg = AllocatorConfig {
        lb_pool: Some("192.168.1.240/29".parse().unwrap()),
        ..AllocatorConfig::default()
    };
    let (web, n1) = {
        let store = open(&path).await;
        let alloc = Allocators::new(store.clone(), cfg.clone());
        let mut web = svc(
            "web",
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        alloc.allocate_service(&mut web, None).await.unwrap();
        let mut n1 = json!({"metadata": {"name": "n1"}});
        alloc.allocate_node_cidr(&mut n1).await.unwrap();
        // A failed write's allocations are given back, durably too.
        let mut failed = svc("failed", json!({"clusterIP": "10.96.0.11"}));
        let taken = alloc.allocate_service(&mut failed, None).await.unwrap();
        alloc.rollback(taken).await;
        (web, n1)
    };

    let store = open(&path).await;
    let alloc = Allocators::new(store.clone(), cfg);
    assert_eq!(count(&store, "/registry/allocations/serviceips/").await, 1);
    assert_eq!(count(&store, "/registry/allocations/nodeports/").await, 1);
    assert_eq!(count(&store, "/registry/allocations/lbips/").await, 1);
    assert_eq!(count(&store, "/registry/allocations/podcidrs/").await, 1);
    let mut again = svc(
        "again",
        json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
    );
    let err = alloc.allocate_service(&mut again, None).await.unwrap_err();
    assert_eq!(err.code, 422);
    assert!(
        err.message.ends_with("provided IP is already allocated"),
        "{err}"
    );
    let mut port = svc(
        "port",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
    );
    let err = alloc.allocate_service(&mut port, None).await.unwrap_err();
    assert!(
        err.message.ends_with("provided port is already allocated"),
        "{err}"
    );
    let mut n2 = json!({"metadata": {"name": "n2"}});
    alloc.allocate_node_cidr(&mut n2).await.unwrap();
    assert_ne!(n2["spec"]["podCIDR"], n1["spec"]["podCIDR"]);
    let mut other_lb = svc(
        "lb2",
        json!({"type": "LoadBalancer", "ports": [{"port": 80}]}),
    );
    alloc.allocate_service(&mut other_lb, None).await.unwrap();
    assert_ne!(
        other_lb["status"]["loadBalancer"],
        web["status"]["loadBalancer"]
    );
    // The IP given back before the restart is free.
    let mut freed = svc("freed", json!({"clusterIP": "10.96.0.11"}));
    alloc.allocate_service(&mut freed, None).await.unwrap();

    // Releases are durable as well.
    alloc.release_service(&web).await;
    alloc.release_node(&n1).await;
    drop(alloc);
    drop(store);
    let store = open(&path).await;
    let alloc = Allocators::new(store.clone(), AllocatorConfig::default());
    let mut reuse = svc("reuse", json!({"clusterIP": "10.96.0.10"}));
    alloc.allocate_service(&mut reuse, None).await.unwrap();
    assert_eq!(count(&store, "/registry/allocations/podcidrs/").await, 1);
}
