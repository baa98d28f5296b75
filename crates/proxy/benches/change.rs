//! Change to kernel: the time from an EndpointSlice write in the API until the node's rules
//! send a new connection to the new endpoint, with N services × 10 endpoints installed.
//! An in-process apiserver (memory store), the proxy in a node namespace with two pods;
//! the probe service's only endpoint flips between the pods, and the node connects to its
//! ClusterIP every millisecond until the other pod answers.
//!
//! `PODNET_BENCH_SERVICES` (default 10000), `PODNET_BENCH_CHANGES` (default 100).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lab;

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::PostParams;
use podnet_apiserver::alloc::AllocatorConfig;
use podnet_apiserver::controllers::ControllerConfig;
use podnet_apiserver::server::{ApiServer, Config, StoreConfig};
use podnet_proxy::{ProxyConfig, ProxyMode};
use serde_json::{Value, json};

/// A server in a pod that writes its name and closes; stopped on drop.
struct NameServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NameServer {
    fn start(ns: &podnet_kernel::NetNs, name: &'static str) -> NameServer {
        let ns = ns.try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            ns.enter().unwrap();
            let l = TcpListener::bind(("0.0.0.0", 8080)).unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(1800);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.write_all(name.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_micros(100)),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        NameServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn slice(svc: &str, addrs: &[Ipv4Addr]) -> EndpointSlice {
    let eps: Vec<Value> = addrs
        .iter()
        .map(|a| json!({"addresses": [a.to_string()], "nodeName": "node-0", "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-slice"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))
    .unwrap()
}

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .unwrap()
}

fn answer(addr: SocketAddrV4) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // RUST_LOG=podnet_proxy=debug shows each sync and its duration.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "podnet_proxy=warn".into()),
        )
        .try_init();
    let services = lab::env_usize("PODNET_BENCH_SERVICES", 10000).max(1);
    let changes = lab::env_usize("PODNET_BENCH_CHANGES", 100).max(1);
    let ns = lab::Namespaces::node_with_pods("chg", 2);
    let _a = NameServer::start(ns.ns("pod-0"), "pod-0");
    let _b = NameServer::start(ns.ns("pod-1"), "pod-1");

    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start(Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        store: StoreConfig::Memory,
        allocators: AllocatorConfig {
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            nodeport_range: 30000..=32767,
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            node_cidr_size: 24,
            lb_pool: None,
        },
        controllers: ControllerConfig::default(),
        bookmark_interval: Duration::from_secs(1),
        tls: Default::default(),
        extra_listeners: Vec::new(),
        versions: Default::default(),
    })
    .await
    .expect("apiserver starts");
    let url = format!("http://{}", server.local_addr());
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");

    let t = Instant::now();
    futures::stream::iter(0..services - 1)
        .map(|i| {
            let (svcs, slices) = (svcs.clone(), slices.clone());
            async move {
                let name = format!("bg-{i}");
                svcs.create(&PostParams::default(), &service(&name))
                    .await
                    .unwrap();
                let eps: Vec<Ipv4Addr> = lab::synthetic(i, 10)
                    .endpoints
                    .iter()
                    .map(|e| e.ip)
                    .collect();
                slices
                    .create(&PostParams::default(), &slice(&name, &eps))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let probe = svcs
        .create(&PostParams::default(), &service("probe"))
        .await
        .unwrap();
    let mut current = slices
        .create(&PostParams::default(), &slice("probe", &[lab::pod_ip(0)]))
        .await
        .unwrap();
    println!(
        "created {services} services × 10 endpoints in the API in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let cip: Ipv4Addr = probe.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
    let target = SocketAddrV4::new(cip, 80);

    let (tx, rx) = tokio::sync::watch::channel(false);
    let config = ProxyConfig {
        node_name: "node-0".into(),
        node_ips: vec![],
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: Some("10.96.0.0/12".parse().unwrap()),
        mode: ProxyMode::Nftables,
        netns: Some(ns.ns("node").try_clone().unwrap()),
        sync_period: Duration::from_secs(3600),
        min_sync_interval: Duration::from_millis(10),
        healthz_bind: None,
        state_dir: None,
        on_sync: None,
    };
    let t = Instant::now();
    let proxy = tokio::spawn(podnet_proxy::run(client.clone(), config, rx));
    let node = ns.ns("node").try_clone().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        node.run(|| {
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                if answer(target).as_deref() == Some("pod-0") {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        })
        .unwrap()
    })
    .await
    .unwrap();
    assert!(first, "the probe service answers after the first sync");
    println!(
        "proxy start to the probe service answering (watch + first full sync): {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );

    let mut times = Vec::new();
    for i in 0..changes {
        let want = if i % 2 == 0 { "pod-1" } else { "pod-0" };
        let ip = if i % 2 == 0 {
            lab::pod_ip(1)
        } else {
            lab::pod_ip(0)
        };
        let mut next = slice("probe", &[ip]);
        next.metadata.resource_version = current.metadata.resource_version.clone();
        let node = ns.ns("node").try_clone().unwrap();
        let t = Instant::now();
        current = slices
            .replace("probe-slice", &PostParams::default(), &next)
            .await
            .unwrap();
        let live = tokio::task::spawn_blocking(move || {
            node.run(|| {
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if answer(target).as_deref() == Some(want) {
                        return Some(t.elapsed());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                None
            })
            .unwrap()
        })
        .await
        .unwrap()
        .expect("the change goes live within 10 s");
        times.push(live.as_secs_f64() * 1000.0);
    }
    println!(
        "EndpointSlice write -> new endpoint answering, {services} services: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {changes} changes (target p99 <= 100 ms)",
        lab::median_ms(times.clone()),
        lab::percentile_ms(times.clone(), 0.99),
        times.iter().cloned().fold(0.0, f64::max)
    );
    let _ = tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), proxy).await;
    server.stop().await;
    // The namespaces (and with the node, the proxy's table) go when `ns` drops.
}
