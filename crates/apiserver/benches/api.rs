//! The apiserver benchmark: creates Services and Pods through the API (kube-rs, many
//! requests in flight), lists them, and measures watch delivery latency: from the moment a
//! Pod's create has returned (it is committed) to the moment each of 20 concurrent watchers
//! has it (negative when a watcher was faster than the create's response: counted as 0),
//! once for a burst of creates (many in flight: latency there is mostly queueing) and once
//! at a steady pace after the watchers caught up;
//! the embedded store and etcd side by side in one run.
//!
//! `cargo bench -p podnet-apiserver --bench api` (10,000 Services, 20,000 Pods);
//! `PODNET_BENCH_SERVICES=200 PODNET_BENCH_PODS=400` for a quick run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Backend, TestServer};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::Mutex;

const WATCHERS: usize = 20;
const IN_FLIGHT: usize = 64;
const PACE_PER_S: u32 = 50;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

struct Figures {
    services_per_s: f64,
    pods_per_s: f64,
    list_services_ms: f64,
    list_pods_ms: f64,
    burst_p50_ms: f64,
    burst_p99_ms: f64,
    paced_p50_ms: f64,
    paced_p99_ms: f64,
    deliveries: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn run(backend: Backend, services: usize, pods: usize, paced: usize) -> Figures {
    let ts = TestServer::start(backend).await;
    let client = ts.client();
    let svc_api: Api<Service> = Api::namespaced(client.clone(), "default");
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");

    let started = Instant::now();
    stream::iter(0..services)
        .map(|i| {
            let api = svc_api.clone();
            async move {
                let svc: Service =
                    serde_json::from_value(json!({"metadata": {"name": format!("svc-{i}")},
                    "spec": {"selector": {"app": format!("a{i}")}, "ports": [{"port": 80}]}}))
                    .unwrap();
                api.create(&PostParams::default(), &svc).await.map(|_| ())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await
        .expect("services created");
    let services_per_s = services as f64 / started.elapsed().as_secs_f64();

    // Watchers start before the pods exist; each records when it saw every pod.
    let seen = Arc::new(Mutex::new(Vec::with_capacity(pods * WATCHERS)));
    let committed = Arc::new(Mutex::new(HashMap::with_capacity(pods)));
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let seen = seen.clone();
        watchers.push(tokio::spawn(async move {
            let mut count = 0;
            let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
            while count < pods + paced {
                let Some(Ok(event)) = events.next().await else {
                    break;
                };
                if let watcher::Event::Apply(pod) = event {
                    let at = now_ns();
                    let name = pod.metadata.name.unwrap_or_default();
                    seen.lock().await.push((name, at));
                    count += 1;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    stream::iter(0..pods)
        .map(|i| {
            let api = pod_api.clone();
            let committed = committed.clone();
            async move {
                let name = format!("pod-{i}");
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"app": format!("a{}", i % services.max(1))}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
                .unwrap();
                api.create(&PostParams::default(), &pod).await?;
                committed.lock().await.insert(name, now_ns());
                Ok::<(), kube::Error>(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await
        .expect("pods created");
    let pods_per_s = pods as f64 / started.elapsed().as_secs_f64();

    // Steady state: once the watchers have caught up with the burst, Pods created one at a
    // time at PACE_PER_S; their delivery latency is what a watcher sees in normal operation.
    let caught_up = Instant::now();
    while seen.lock().await.len() < pods * WATCHERS {
        assert!(
            caught_up.elapsed() < Duration::from_secs(600),
            "watchers never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1) / PACE_PER_S);
    for i in 0..paced {
        tick.tick().await;
        let name = format!("paced-{i}");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "paced"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap();
        pod_api.create(&PostParams::default(), &pod).await.unwrap();
        committed.lock().await.insert(name, now_ns());
    }
    for w in watchers {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("watchers saw every pod")
            .unwrap();
    }

    let mut svc_times = Vec::new();
    let mut pod_times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let l = svc_api.list(&ListParams::default()).await.unwrap();
        svc_times.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(l.items.len() >= services);
        let t = Instant::now();
        let l = pod_api.list(&ListParams::default()).await.unwrap();
        pod_times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(l.items.len(), pods + paced);
    }
    svc_times.sort_by(f64::total_cmp);
    pod_times.sort_by(f64::total_cmp);
    let committed = committed.lock().await;
    let seen = seen.lock().await;
    let latencies = |prefix: &str| {
        let mut lat: Vec<f64> = seen
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .filter_map(|(name, at)| {
                committed
                    .get(name)
                    .map(|c| at.saturating_sub(*c) as f64 / 1e6)
            })
            .collect();
        lat.sort_by(f64::total_cmp);
        lat
    };
    let (burst, steady) = (latencies("pod-"), latencies("paced-"));
    ts.stop().await;
    Figures {
        services_per_s,
        pods_per_s,
        list_services_ms: percentile(&svc_times, 0.5),
        list_pods_ms: percentile(&pod_times, 0.5),
        burst_p50_ms: percentile(&burst, 0.5),
        burst_p99_ms: percentile(&burst, 0.99),
        paced_p50_ms: percentile(&steady, 0.5),
        paced_p99_ms: percentile(&steady, 0.99),
        deliveries: burst.len() + steady.len(),
    }
}

#[tokio::main]
async fn main() {
    let services = env_count("PODNET_BENCH_SERVICES", 10_000);
    let pods = env_count("PODNET_BENCH_PODS", 20_000);
    let paced = env_count("PODNET_BENCH_PACED", 500);
    println!(
        "apiserver benchmark: {services} Services, {pods} Pods in a burst ({IN_FLIGHT} requests in flight), then {paced} Pods at {PACE_PER_S}/s; {WATCHERS} watchers"
    );
    let embedded = run(Backend::Embedded, services, pods, paced).await;
    let etcd = run(Backend::Etcd, services, pods, paced).await;
    println!("{:<34} {:>12} {:>12}", "", "embedded", "etcd");
    let row = |name: &str, a: f64, b: f64| println!("{name:<34} {a:>12.1} {b:>12.1}");
    row(
        "service creates/s",
        embedded.services_per_s,
        etcd.services_per_s,
    );
    row("pod creates/s", embedded.pods_per_s, etcd.pods_per_s);
    row(
        "list all services, median ms",
        embedded.list_services_ms,
        etcd.list_services_ms,
    );
    row(
        "list all pods, median ms",
        embedded.list_pods_ms,
        etcd.list_pods_ms,
    );
    row(
        "watch delivery, burst, p50 ms",
        embedded.burst_p50_ms,
        etcd.burst_p50_ms,
    );
    row(
        "watch delivery, burst, p99 ms",
        embedded.burst_p99_ms,
        etcd.burst_p99_ms,
    );
    row(
        "watch delivery, steady, p50 ms",
        embedded.paced_p50_ms,
        etcd.paced_p50_ms,
    );
    row(
        "watch delivery, steady, p99 ms",
        embedded.paced_p99_ms,
        etcd.paced_p99_ms,
    );
    println!(
        "{:<34} {:>12} {:>12}",
        "deliveries measured", embedded.deliveries, etcd.deliveries
    );
    println!(
        "target: embedded watch delivery p99 < 10 ms (steady state): {}",
        if embedded.paced_p99_ms < 10.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
