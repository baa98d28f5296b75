//! Issue 6 (b) on a real lab: the time from an EndpointSlice change written
//! through the API until the rule is live in the kernel on EVERY node of a
//! 3-node lab (`podnet lab up --nodes 3 --proxy-mode nftables`), p50/p99 over
//! `PODNET_BENCH_CHANGES` (100) changes, first with one Service, then with
//! `PODNET_BENCH_SERVICES` (1000) background Services of
//! `PODNET_BENCH_ENDPOINTS` (10) endpoints each.
//!
//! A change replaces the probe Service's one endpoint address with a new,
//! never used one (198.18.0.0/15, the benchmarking range: the rule is what
//! is measured, no packet goes there). "Live" is the moment the node's
//! kernel announces the new address in the service's endpoint map
//! (`… : <new address> . 8080`): `nft monitor new` runs in every node
//! namespace before the changes and its events come at the commit of the
//! proxy's transaction, so nothing polls the table. The clock starts before
//! the API write, so the write is included.
//!
//! Needs root; prints "skipped" otherwise. The lab is removed at the end,
//! also after a failure (guard).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

const PODNET: &str = env!("CARGO_BIN_EXE_podnet");
const NODES: usize = 3;
/// How long one change may take to be live on every node.
const LIVE_WITHIN: Duration = Duration::from_secs(10);
/// How long the background Services may take to be synced on every node.
const BACKGROUND_WITHIN: Duration = Duration::from_secs(300);

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: give a whole number")),
        Err(_) => default,
    }
}

/// The lab and the monitors, removed when dropped.
struct Lab {
    name: String,
    monitors: Vec<Child>,
}

impl Lab {
    fn up(name: &str) -> Lab {
        let lab = Lab {
            name: name.to_string(),
            monitors: Vec::new(),
        };
        let nodes = NODES.to_string();
        let out = Command::new(PODNET)
            .args(["lab", "up", "--name", name, "--nodes", &nodes])
            .args(["--proxy-mode", "nftables"])
            .output()
            .expect("run podnet lab up");
        assert!(
            out.status.success(),
            "lab up failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    fn kubeconfig(&self) -> String {
        format!("/var/lib/podnet/{}/kubeconfig", self.name)
    }

    /// Starts `nft monitor new` in every node; each line it prints
    /// comes to the returned receiver with the node index and arrival time.
    fn watch_rules(&mut self) -> mpsc::Receiver<(usize, Instant, String)> {
        let (tx, rx) = mpsc::channel();
        for i in 0..NODES {
            let node = format!("{}-node{}", self.name, i + 1);
            let mut child = Command::new("ip")
                .args(["netns", "exec", &node, "nft", "monitor", "new"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("run nft monitor");
            let stdout = child.stdout.take().unwrap();
            self.monitors.push(child);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((i, Instant::now(), line)).is_err() {
                        break;
                    }
                }
            });
        }
        rx
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.monitors {
            let _ = child.kill();
            let _ = child.wait();
        }
        let out = Command::new(PODNET)
            .args(["lab", "down", "--name", &self.name])
            .output();
        if let Ok(out) = out
            && !out.status.success()
        {
            eprintln!(
                "lab down --name {} failed:\n{}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .unwrap()
}

fn slice(svc: &str, addrs: &[Ipv4Addr]) -> EndpointSlice {
    let eps: Vec<_> = addrs
        .iter()
        .map(|a| json!({"addresses": [a.to_string()], "conditions": {"ready": true}}))
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

/// The n-th address of 198.18.0.0/15 (n < 131,072).
fn bench_addr(n: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + n as u32)
}

/// The probe Service's slice and the next unused address.
struct Probe {
    slices: Api<EndpointSlice>,
    current: EndpointSlice,
    next_addr: usize,
}

impl Probe {
    /// Replaces the endpoint with a new address; returns when the rule to it
    /// is live on every node: the time per node, in ms, from before the
    /// write. An error when it is not live everywhere `within`.
    async fn change(
        &mut self,
        rx: &mpsc::Receiver<(usize, Instant, String)>,
        within: Duration,
    ) -> Result<Vec<f64>, String> {
        let addr = bench_addr(self.next_addr);
        self.next_addr += 1;
        let mut next = slice("probe", &[addr]);
        next.metadata.resource_version = self.current.metadata.resource_version.clone();
        let started = Instant::now();
        self.current = self
            .slices
            .replace("probe-slice", &PostParams::default(), &next)
            .await
            .expect("write the probe EndpointSlice");
        let want = format!(": {addr} . 8080");
        let mut live: Vec<Option<f64>> = vec![None; NODES];
        let deadline = started + within;
        // The monitors' lines come over a std channel: wait for them off the
        // async workers' duty.
        tokio::task::block_in_place(|| {
            while live.iter().any(Option::is_none) {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok((i, at, line)) if line.contains(&want) && live[i].is_none() => {
                        live[i] = Some(at.duration_since(started).as_secs_f64() * 1000.0);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return Err(format!(
                            "the rule to {addr} is not live on every node after {} s (ms per node: {live:?})",
                            within.as_secs()
                        ));
                    }
                }
            }
            Ok(live.into_iter().flatten().collect())
        })
    }
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// `changes` changes; prints p50/p99 of the slowest node per change (the
/// rule live on EVERY node) and of each node.
async fn measure(
    probe: &mut Probe,
    rx: &mpsc::Receiver<(usize, Instant, String)>,
    changes: usize,
    services: usize,
) {
    let mut per_node: Vec<Vec<f64>> = vec![Vec::new(); NODES];
    let mut every = Vec::new();
    for _ in 0..changes {
        let times = probe.change(rx, LIVE_WITHIN).await.unwrap();
        every.push(times.iter().cloned().fold(0.0, f64::max));
        for (i, t) in times.into_iter().enumerate() {
            per_node[i].push(t);
        }
    }
    println!(
        "{NODES} nodes, {services} services: EndpointSlice write -> rule live on every node: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {changes} changes",
        percentile(every.clone(), 0.5),
        percentile(every.clone(), 0.99),
        percentile(every, 1.0),
    );
    for (i, times) in per_node.into_iter().enumerate() {
        println!(
            "  node{}: p50 {:.1} ms, p99 {:.1} ms",
            i + 1,
            percentile(times.clone(), 0.5),
            percentile(times, 0.99)
        );
    }
}

/// `count` selector-less Services with `endpoints` addresses each, written
/// 16 at a time.
async fn create_background(client: &kube::Client, count: usize, endpoints: usize) {
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    futures::stream::iter(0..count)
        .map(|i| {
            let (svcs, slices) = (svcs.clone(), slices.clone());
            async move {
                let name = format!("bg-{i}");
                svcs.create(&PostParams::default(), &service(&name))
                    .await
                    .unwrap_or_else(|e| panic!("create service {name}: {e}"));
                // Addresses from the top half of the range, apart from the probe's.
                let eps: Vec<Ipv4Addr> = (0..endpoints)
                    .map(|e| bench_addr(65_536 + (i * endpoints + e) % 65_535))
                    .collect();
                slices
                    .create(&PostParams::default(), &slice(&name, &eps))
                    .await
                    .unwrap_or_else(|e| panic!("create the slice of {name}: {e}"));
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

async fn run(lab: &mut Lab, services: usize, endpoints: usize, changes: usize) {
    let kc = kube::config::Kubeconfig::read_from(lab.kubeconfig()).expect("read the kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
    let client = kube::Client::try_from(config).expect("API client");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let rx = lab.watch_rules();
    // Let the monitors subscribe before the first change.
    std::thread::sleep(Duration::from_millis(300));
    svcs.create(&PostParams::default(), &service("probe"))
        .await
        .expect("create the probe Service");
    let current = slices
        .create(&PostParams::default(), &slice("probe", &[bench_addr(0)]))
        .await
        .expect("create the probe EndpointSlice");
    let mut probe = Probe {
        slices,
        current,
        next_addr: 1,
    };
    // The first change also waits for the proxies' first sync of the probe.
    probe.change(&rx, BACKGROUND_WITHIN).await.unwrap();
    measure(&mut probe, &rx, changes, 1).await;

    let t = Instant::now();
    create_background(&client, services, endpoints).await;
    println!(
        "created {services} background services × {endpoints} endpoints in the API in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // A change after them is live only once the proxies have caught up.
    let t = Instant::now();
    probe
        .change(&rx, BACKGROUND_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("the background services are not synced: {e}"));
    println!(
        "every node caught up {:.1} s after the last write",
        t.elapsed().as_secs_f64()
    );
    measure(&mut probe, &rx, changes, services + 1).await;
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("services bench skipped: needs root (it builds a lab)");
        return;
    }
    let services = env_usize("PODNET_BENCH_SERVICES", 1000);
    let endpoints = env_usize("PODNET_BENCH_ENDPOINTS", 10).max(1);
    let changes = env_usize("PODNET_BENCH_CHANGES", 100).max(1);
    let mut lab = Lab::up(&format!("bsv{}", std::process::id() % 100_000));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(&mut lab, services, endpoints, changes));
}
