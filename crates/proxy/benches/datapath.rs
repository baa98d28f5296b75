//! The data path through a ClusterIP, with the proxy's rules installed directly (render +
//! apply, no apiserver): a node namespace with two pods on its bridge, pod-0 serving,
//! pod-1 the client.
//!
//! (c) TCP connect latency to a ClusterIP with 1 vs N services installed (median and p99
//!     of `PODNET_BENCH_CONNECTS` connects, default 1000; N from
//!     `PODNET_BENCH_LATENCY_SERVICES`, default `1,10000`), and straight to the pod IP.
//! (d) TCP throughput (iperf3, `PODNET_BENCH_IPERF_SECONDS` per run, default 3) through
//!     the ClusterIP vs straight to the pod IP. Skipped when `iperf3` is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../podnet/benches/support/connects.rs"]
mod connects;
mod lab;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use podnet_proxy::model::{self, Endpoint, Layout, NodeContext, ServiceState};
use podnet_proxy::nftables::{self, TableConfig};

const CIP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);
const IPERF_CIP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 2);

/// A server thread in pod-0 that accepts and closes; stops on drop.
struct Acceptor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acceptor {
    fn start(ns: &podnet_kernel::NetNs) -> Acceptor {
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
                    Ok((c, _)) => drop(c),
                    Err(_) => std::thread::sleep(Duration::from_micros(50)),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Acceptor {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A child process killed (by its PID) and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn real_service(name: &str, cip: Ipv4Addr, port: u16, target: u16) -> ServiceState {
    let mut s = lab::synthetic(0, 0);
    s.port.name.name = name.into();
    s.port.cluster_ip = cip;
    s.port.port = port;
    s.endpoints = vec![Endpoint {
        ip: lab::pod_ip(0),
        port: target,
        node_name: Some("node-0".into()),
        ready: true,
        serving: true,
        terminating: false,
    }];
    s
}

fn install(node: &podnet_kernel::NetNs, ctx: &NodeContext, services: usize) -> f64 {
    let cfg = TableConfig {
        node_ips: vec![],
        service_cidr: None,
    };
    let mut states = vec![
        real_service("latency", CIP, 80, 8080),
        real_service("iperf", IPERF_CIP, 5201, 5201),
    ];
    states.extend((0..services.saturating_sub(1)).map(|i| lab::synthetic(i, 10)));
    let rules: BTreeMap<_, _> = states
        .iter()
        .map(|s| (s.port.name.clone(), model::service_rules(s, ctx)))
        .collect();
    let (text, _) = nftables::render_full(&cfg, rules);
    let t = Instant::now();
    nftables::apply(Some(node), &text).expect("rules apply");
    t.elapsed().as_secs_f64() * 1000.0
}

fn iperf(ns_name: &str, target: Ipv4Addr, seconds: usize) -> Option<f64> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns_name, "iperf3", "-c"])
        .arg(target.to_string())
        .args(["-p", "5201", "-J", "-t", &seconds.to_string()])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
}

/// Connect latencies (ms) from `client` to `addr`.
fn connects_ms(client: &podnet_kernel::NetNs, addr: SocketAddrV4, n: usize) -> Vec<f64> {
    connects::connect_latencies(client, addr, n)
        .into_iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect()
}

fn main() {
    let sizes = lab::env_list("PODNET_BENCH_LATENCY_SERVICES", "1,10000");
    let n = lab::env_usize("PODNET_BENCH_CONNECTS", 1000).max(10);
    let secs = lab::env_usize("PODNET_BENCH_IPERF_SECONDS", 3).max(1);
    let ctx = NodeContext {
        node_name: "node-0".into(),
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        layout: Layout::Compact,
    };
    let ns = lab::Namespaces::node_with_pods("dp", 2);
    let node = ns.ns("node");
    podnet_kernel::sysctl::write(node, "net.bridge.bridge-nf-call-iptables", "1").unwrap();
    let client = ns.ns("pod-1");
    let _acceptor = Acceptor::start(ns.ns("pod-0"));
    println!(
        "proxy data path bench: pod-1 -> pod-0 on one bridge, layout {:?}",
        ctx.layout
    );

    let direct = connects_ms(client, SocketAddrV4::new(lab::pod_ip(0), 8080), n);
    println!(
        "connect straight to the pod IP: median {:.3} ms, p99 {:.3} ms ({n} connects)",
        lab::median_ms(direct.clone()),
        lab::percentile_ms(direct, 0.99)
    );
    let mut medians = Vec::new();
    for &services in &sizes {
        let apply_ms = install(node, &ctx, services);
        let lat = connects_ms(client, SocketAddrV4::new(CIP, 80), n);
        let median = lab::median_ms(lat.clone());
        println!(
            "connect to a ClusterIP with {services:>6} services installed: median {median:.3} ms, p99 {:.3} ms ({n} connects; rules applied in {apply_ms:.0} ms)",
            lab::percentile_ms(lat, 0.99)
        );
        medians.push((services, median));
    }
    if let (Some(first), Some(last)) = (medians.first(), medians.last())
        && medians.len() > 1
    {
        println!(
            "connect latency ratio {} vs {} services: {:.3} (target <= 1.10)",
            last.0,
            first.0,
            last.1 / first.1
        );
    }

    // (d) throughput: the last rule set stays installed.
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name("pod-0"),
            "iperf3",
            "-s",
            "-p",
            "5201",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(server) = server else {
        println!("iperf3 not found: throughput skipped (apt-get install -y iperf3)");
        return;
    };
    let _server = Proc(server);
    std::thread::sleep(Duration::from_millis(500));
    let client_ns = ns.name("pod-1");
    let mut direct = Vec::new();
    let mut via = Vec::new();
    for _ in 0..2 {
        direct.extend(iperf(&client_ns, lab::pod_ip(0), secs));
        via.extend(iperf(&client_ns, IPERF_CIP, secs));
    }
    if direct.is_empty() || via.is_empty() {
        println!("iperf3 runs failed: throughput skipped");
        return;
    }
    let d = direct.iter().sum::<f64>() / direct.len() as f64;
    let v = via.iter().sum::<f64>() / via.len() as f64;
    println!(
        "throughput straight to the pod: {d:.2} Gbit/s; through the ClusterIP: {v:.2} Gbit/s; ratio {:.3} (target >= 0.95; {} runs of {secs} s each)",
        v / d,
        direct.len()
    );
}
