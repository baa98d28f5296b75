//! Issue 6 (d) for the userspace mode: TCP throughput through a ClusterIP served by the
//! userspace proxy vs straight to the pod IP, side by side in one run, with the nftables
//! mode's ClusterIP as a third column (the modes compared under the same load).
//!
//! A node namespace with two pods on its bridge: pod-0 runs `iperf3 -s`, pod-1 runs
//! `iperf3 -c` to pod-0's IP, to the userspace ClusterIP, whose `KUBE-PORTALS-CONTAINER`
//! rule redirects it to the `UserspaceProxy` running in the node, which splices it to
//! pod-0, and to the nftables ClusterIP (DNAT in the kernel). The runs alternate, so a
//! noisy neighbour on the shared cores hits every column.
//!
//! Knobs: `PODNET_BENCH_IPERF_SECONDS` per run (default 3), `PODNET_BENCH_IPERF_RUNS` runs
//! of each kind (default 3, at least 3), `PODNET_BENCH_IPERF_STREAMS` parallel stream
//! counts to measure (default `1,4`). Needs `iperf3` (apt-get install -y iperf3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lab;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use podnet_proxy::model::{self, Endpoint, Layout, NodeContext};
use podnet_proxy::nftables::{self, TableConfig};
use podnet_proxy::userspace::{Protocol, ServicePort, UserspaceConfig, UserspaceProxy};

/// The ClusterIP the userspace proxy serves.
const IPERF_CIP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 2);
/// The ClusterIP the nftables mode's rules serve (same backend).
const NFT_CIP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 3);
const IPERF_PORT: u16 = 5201;
/// The node's address on the pods' bridge: what `KUBE-PORTALS-HOST` would DNAT to.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);

/// A child process killed (by its PID) and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The userspace proxy, stopped with its rules removed on drop (also on a panic), before
/// the namespaces it lives in go.
struct Proxy {
    runtime: tokio::runtime::Runtime,
    proxy: Option<UserspaceProxy>,
}

impl Proxy {
    fn start(node: &podnet_kernel::NetNs) -> Proxy {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let proxy = UserspaceProxy::start(UserspaceConfig {
            netns: Some(node.try_clone().unwrap()),
            node_ip: NODE_IP,
            udp_idle_timeout: Duration::from_secs(30),
            state_file: None,
        })
        .expect("start the userspace proxy in the node namespace");
        let service = ServicePort {
            name: "bench/iperf:".into(),
            protocol: Protocol::Tcp,
            cluster_ip: Some(IPERF_CIP),
            port: IPERF_PORT,
            external_ips: vec![],
            node_port: None,
            affinity: None,
            endpoints: vec![SocketAddrV4::new(lab::pod_ip(0), IPERF_PORT)],
        };
        let report = runtime
            .block_on(proxy.sync(vec![service]))
            .expect("sync the iperf service into the userspace proxy");
        assert!(
            report.skipped.is_empty(),
            "the userspace proxy skipped the iperf service: {:?}",
            report.skipped
        );
        println!(
            "userspace proxy: {IPERF_CIP}:{IPERF_PORT} -> node port {:?} -> {}:{IPERF_PORT}",
            report.ports.values().next(),
            lab::pod_ip(0)
        );
        Proxy {
            runtime,
            proxy: Some(proxy),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(proxy) = self.proxy.take()
            && let Err(e) = self.runtime.block_on(proxy.stop(true))
        {
            eprintln!("stopping the userspace proxy: {e}");
        }
    }
}

/// The nftables mode's rules for [`NFT_CIP`] in the node, as `datapath.rs` installs them
/// (render + apply, no apiserver); they go with the node namespace.
fn install_nftables(node: &podnet_kernel::NetNs) {
    let ctx = NodeContext {
        node_name: "node-0".into(),
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        layout: Layout::default(),
    };
    let mut state = lab::synthetic(0, 0);
    state.port.name.name = "iperf-nft".into();
    state.port.cluster_ip = NFT_CIP;
    state.port.port = IPERF_PORT;
    state.endpoints = vec![Endpoint {
        ip: lab::pod_ip(0),
        port: IPERF_PORT,
        node_name: Some("node-0".into()),
        ready: true,
        serving: true,
        terminating: false,
    }];
    let cfg = TableConfig {
        node_ips: vec![],
        service_cidr: None,
    };
    let rules = [(state.port.name.clone(), model::service_rules(&state, &ctx))].into();
    let (text, _) = nftables::render_full(&cfg, rules);
    nftables::apply(Some(node), &text).expect("apply the nftables mode's rules");
}

/// One iperf3 client run from namespace `ns_name`: received Gbit/s, or why it failed.
fn iperf(ns_name: &str, target: Ipv4Addr, seconds: usize, streams: usize) -> Result<f64, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns_name, "iperf3", "-c"])
        .arg(target.to_string())
        .args([
            "-p",
            &IPERF_PORT.to_string(),
            "-J",
            "-t",
            &seconds.to_string(),
        ])
        .args(["-P", &streams.to_string()])
        .output()
        .map_err(|e| format!("running iperf3: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "iperf3 printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(err) = v["error"].as_str() {
        return Err(format!("iperf3 to {target}: {err}"));
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| format!("iperf3 to {target}: no end.sum_received in its JSON"))
}

/// Starts `iperf3 -s` in pod-0 and waits until it accepts connections.
fn iperf_server(ns: &lab::Namespaces) -> Proc {
    let server = Command::new("ip")
        .args(["netns", "exec", &ns.name("pod-0"), "iperf3", "-s"])
        .args(["-p", &IPERF_PORT.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 not found: apt-get install -y iperf3");
    let server = Proc(server);
    let addr = SocketAddrV4::new(lab::pod_ip(0), IPERF_PORT);
    let deadline = Instant::now() + Duration::from_secs(5);
    // A probe connection from pod-1 tells the server is up; iperf3 logs it and goes on.
    while ns
        .ns("pod-1")
        .run(|| std::net::TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)))
        .unwrap()
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "iperf3 -s in pod-0 never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let iperf3 finish with the probe before the first real test.
    std::thread::sleep(Duration::from_millis(300));
    server
}

/// Medians (Gbit/s) of alternating runs: direct, userspace ClusterIP, nftables ClusterIP.
fn measure(client_ns: &str, seconds: usize, runs: usize, streams: usize) -> (f64, f64, f64) {
    let (mut direct, mut via, mut nft) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        direct.push(iperf(client_ns, lab::pod_ip(0), seconds, streams).unwrap());
        via.push(iperf(client_ns, IPERF_CIP, seconds, streams).unwrap());
        nft.push(iperf(client_ns, NFT_CIP, seconds, streams).unwrap());
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|g| format!("{g:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "  -P {streams}: direct [{}], userspace ClusterIP [{}], nftables ClusterIP [{}] Gbit/s",
        show(&direct),
        show(&via),
        show(&nft)
    );
    (
        lab::median_ms(direct),
        lab::median_ms(via),
        lab::median_ms(nft),
    )
}

fn main() {
    let seconds = lab::env_usize("PODNET_BENCH_IPERF_SECONDS", 3).max(1);
    let runs = lab::env_usize("PODNET_BENCH_IPERF_RUNS", 3).max(3);
    let streams = lab::env_list("PODNET_BENCH_IPERF_STREAMS", "1,4");
    let ns = lab::Namespaces::node_with_pods("us", 2);
    // As the agent does on every node, in both modes (the nftables mode needs it for the
    // reply of a pod on the same bridge to be un-NATed).
    podnet_kernel::sysctl::write(ns.ns("node"), "net.bridge.bridge-nf-call-iptables", "1")
        .expect("net.bridge.bridge-nf-call-iptables in the node (modprobe br_netfilter)");
    install_nftables(ns.ns("node"));
    let _server = iperf_server(&ns);
    // Declared after the namespaces, so it is dropped (stopped) before they are deleted.
    let _proxy = Proxy::start(ns.ns("node"));
    let client_ns = ns.name("pod-1");
    // The ratio depends on whether the direct path has a core to spare (the proxied path
    // does about twice the kernel work per byte), so the load goes with the figures.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "userspace mode throughput: pod-1 -> pod-0 on one bridge, iperf3 {seconds} s x {runs} runs each, alternating; {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut rows = Vec::new();
    for &p in &streams {
        rows.push((p, measure(&client_ns, seconds, runs, p)));
    }
    for (p, (direct, via, nft)) in rows {
        println!(
            "throughput -P {p}: straight to the pod {direct:.2} Gbit/s; through the ClusterIP (userspace proxy) {via:.2} Gbit/s; ratio {:.3} (target >= 0.50); nftables mode ClusterIP {nft:.2} Gbit/s, ratio {:.3} (target >= 0.95); medians of {runs} runs",
            via / direct,
            nft / direct
        );
    }
}
