//! Issue 14 (c): TCP connect latency and iperf3 throughput between two pods with 1,000
//! NetworkPolicies installed vs none.
//!
//! A node namespace (`node-0`, with the masquerade table every podnet node has: its NAT hook
//! puts conntrack on every packet, with or without policies) with the bridge `cni0`
//! (10.244.0.1/24, bridge netfilter on:
//! `net.bridge.bridge-nf-call-iptables=1`, as the agent sets it) and two pod namespaces on
//! veths: the server (10.244.0.250, namespace ns-099, `app=bench-server`) and the client
//! (10.244.0.251, ns-098, `app=bench-client`). The table is the model's for node-0 of the
//! synthetic cluster of `shape/` (1,000 policies over 1,000 pods in 100 namespaces on 10
//! nodes) plus these two pods and one more policy, `ns-099/zz-allow-bench-client`, the
//! last in name order: the only one that lets the client in. The server is also selected
//! by three of ns-099's policies (default deny, same namespace, monitoring), which its
//! isolation chain jumps to first.
//!
//! Connect latency: `PODNET_BENCH_SLICES` (20) times, `PODNET_BENCH_CONNECTS` (250) connects
//! with no table, then as many with the table; the medians of each slice give a paired
//! ratio (the load of this shared machine drifts over seconds by more than the difference
//! measured, so the states alternate often). Throughput: `PODNET_BENCH_ROUNDS` (3) iperf3
//! runs of `PODNET_BENCH_IPERF_SECONDS` (3) in each state in turn. Medians are printed.
//! Each state is checked by a probe the policies refuse (port 8081: reset without the
//! table, dropped with it). Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../podnet/benches/support/connects.rs"]
mod connects;
mod shape;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use connects::connect_latencies;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use podnet_kernel::nftnl::{Family, Hook, NftSocket};
use podnet_kernel::ruleset::trace::{Outcome, Packet, trace};
use podnet_kernel::ruleset::{self, Table};
use podnet_kernel::{NetNs, OwnedNetNs};
use podnet_policy::cluster::namespace_labels;
use podnet_policy::{Cluster, PodInfo, PolicyConfig, TABLE, desired};
use serde_json::json;
use shape::{Shape, env_usize, median, percentile};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 250);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 251);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The node and the two pods, deleted on drop.
struct Topology {
    node: OwnedNetNs,
    server: OwnedNetNs,
    client: OwnedNetNs,
}

impl Topology {
    fn new() -> Topology {
        let prefix = format!("pn-polb-{}-dp", std::process::id());
        let make = |role: &str| {
            let name = format!("{prefix}-{role}");
            let _ = NetNs::delete(&name);
            OwnedNetNs::create(&name).expect("create a bench namespace")
        };
        let t = Topology {
            node: make("node"),
            server: make("server"),
            client: make("client"),
        };
        let node = t.node.name().to_string();
        ip(&["-n", &node, "link", "set", "lo", "up"]);
        ip(&["-n", &node, "link", "add", "cni0", "type", "bridge"]);
        ip(&["-n", &node, "addr", "add", "10.244.0.1/24", "dev", "cni0"]);
        ip(&["-n", &node, "link", "set", "cni0", "up"]);
        podnet_kernel::sysctl::write(&t.node, "net.ipv4.ip_forward", "1").unwrap();
        podnet_kernel::sysctl::write(&t.node, "net.bridge.bridge-nf-call-iptables", "1")
            .expect("bridge netfilter in the node (modprobe br_netfilter)");
        for (i, (pod, addr)) in [(&t.server, SERVER), (&t.client, CLIENT)]
            .into_iter()
            .enumerate()
        {
            let host = format!("veth{i}");
            ip(&["-n", pod.name(), "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &node,
                "link",
                "add",
                &host,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                pod.name(),
            ]);
            ip(&["-n", &node, "link", "set", &host, "master", "cni0"]);
            ip(&["-n", &node, "link", "set", &host, "up"]);
            let cidr = format!("{addr}/24");
            ip(&["-n", pod.name(), "addr", "add", &cidr, "dev", "eth0"]);
            ip(&["-n", pod.name(), "link", "set", "eth0", "up"]);
            ip(&[
                "-n",
                pod.name(),
                "route",
                "add",
                "default",
                "via",
                "10.244.0.1",
            ]);
        }
        t
    }
}

/// A server thread in the server pod that accepts and closes; stops on drop.
struct Acceptor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acceptor {
    fn start(ns: &NetNs) -> Acceptor {
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

/// What a connect to a port nobody listens on meets: "reset" (no policy in the way) or
/// "dropped" (refused by the policies).
fn refused_probe(client: &NetNs) -> &'static str {
    client
        .run(|| {
            let addr = SocketAddrV4::new(SERVER, 8081);
            match TcpStream::connect_timeout(&addr.into(), Duration::from_millis(300)) {
                Ok(_) => "answered",
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => "reset",
                Err(e) if e.kind() == ErrorKind::TimedOut => "dropped",
                Err(_) => "failed",
            }
        })
        .unwrap()
}

fn iperf(client: &str, seconds: usize) -> Option<f64> {
    let out = Command::new("ip")
        .args(["netns", "exec", client, "iperf3", "-c"])
        .arg(SERVER.to_string())
        .args(["-p", "5201", "-J", "-t", &seconds.to_string()])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
}

/// The synthetic cluster with the two pods and the pair's policy.
fn cluster(shape: &Shape) -> Cluster {
    let mut pods: Vec<PodInfo> = shape.typed_pods().iter().map(PodInfo::from_pod).collect();
    for (name, ns, addr) in [
        ("bench-server", "ns-099", SERVER),
        ("bench-client", "ns-098", CLIENT),
    ] {
        pods.push(PodInfo {
            namespace: ns.into(),
            name: name.into(),
            labels: [
                ("app".to_string(), name.to_string()),
                ("tier".to_string(), "bench".to_string()),
            ]
            .into(),
            ip: Some(addr),
            node: Some("node-0".into()),
            ports: Vec::new(),
        });
    }
    let mut policies = shape.typed_policies();
    let pair: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "zz-allow-bench-client", "namespace": "ns-099"},
        "spec": {"podSelector": {"matchLabels": {"app": "bench-server"}},
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ns-098"}},
                                        "podSelector": {"matchLabels": {"app": "bench-client"}}}],
                              "ports": [{"port": 8080}, {"port": 5201}]}]}
    }))
    .unwrap();
    policies.push(pair);
    Cluster {
        pods,
        namespaces: shape
            .typed_namespaces()
            .iter()
            .map(namespace_labels)
            .collect(),
        policies,
        ..Cluster::default()
    }
}

/// The rules a connection's first packet is tested against on its way through the
/// forward hook, from the tracer's walk (every rule of each chain it entered, up to the
/// one that decided).
fn evaluated(table: &Table, packet: &Packet) -> (Outcome, usize, Vec<String>) {
    let walk = trace(std::slice::from_ref(table), Hook::Forward, packet);
    let mut chains: Vec<String> = Vec::new();
    for s in &walk.steps {
        if !chains.contains(&s.chain) {
            chains.push(s.chain.clone());
        }
        for word in ["jump ", "goto "] {
            if let Some(target) = s.rule.split(word).nth(1) {
                let target = target.split_whitespace().next().unwrap_or("").to_string();
                if !chains.contains(&target) {
                    chains.push(target);
                }
            }
        }
    }
    let rules = chains
        .iter()
        .filter_map(|c| table.chain(c))
        .map(|c| c.rules.len())
        .sum();
    (walk.outcome, rules, chains)
}

fn main() {
    let rounds = env_usize("PODNET_BENCH_ROUNDS", 3).max(1);
    let n = env_usize("PODNET_BENCH_CONNECTS", 250).max(10);
    let secs = env_usize("PODNET_BENCH_IPERF_SECONDS", 3).max(1);
    let policies = env_usize("PODNET_BENCH_POLICIES", 1000);
    let shape = Shape::new(100, 1000, policies, 10);
    let cfg = PolicyConfig {
        node: "node-0".into(),
        log_group: 100,
    };
    let table = desired(&cluster(&shape), &cfg).expect("a table");
    let syn = Packet::new(CLIENT, SERVER, 6, 8080);
    let (outcome, rules, chains) = evaluated(&table, &syn);
    assert_eq!(outcome, Outcome::Accepted, "the pair is allowed");
    let (other, _, _) = evaluated(&table, &Packet::new(CLIENT, SERVER, 6, 8081));
    assert_eq!(other, Outcome::Dropped, "port 8081 is refused");
    println!(
        "policy data path bench: client -> server pod on one bridge, {} policies ({} sets, {} chains); the first packet of a connection meets {rules} rules in {} chains ({}); established packets: the first rule",
        policies + 1,
        table.sets.len(),
        table.chains.len(),
        chains.len(),
        chains.join(" > ")
    );
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    {
        println!("skipped: needs root (namespaces of its own)");
        return;
    }
    let topo = Topology::new();
    // Every podnet node has its masquerade table, whose NAT hook puts conntrack on every
    // packet: "no policy" is such a node, not a bridge that bypasses netfilter.
    podnet_overlay::masq::ensure(
        Some(&topo.node),
        "10.244.0.0/16".parse().unwrap(),
        "10.244.0.0/24".parse().unwrap(),
    )
    .expect("the node's masquerade table");
    let _acceptor = Acceptor::start(&topo.server);
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            topo.server.name(),
            "iperf3",
            "-s",
            "-p",
            "5201",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
        .map(Proc);
    std::thread::sleep(Duration::from_millis(500));
    let mut bench = States {
        topo: &topo,
        socket: NftSocket::open(Some(&topo.node)).expect("netfilter socket"),
        table: &table,
    };
    let slices = env_usize("PODNET_BENCH_SLICES", 20).max(1);
    latency(&mut bench, slices, n);
    if server.is_some() {
        throughput(&mut bench, rounds, secs);
    } else {
        println!("throughput skipped: iperf3 missing");
    }
    ruleset::delete_table(Some(&topo.node), Family::Inet, TABLE).unwrap();
}

const NAMES: [&str; 2] = ["no policy", "1,001 policies"];

/// The node in one of the two states, switched in turn.
struct States<'a> {
    topo: &'a Topology,
    socket: NftSocket,
    table: &'a Table,
}

impl States<'_> {
    /// Puts the node in `state` (0: no policy table, 1: the table) and checks it with a
    /// probe the policies refuse; the time the table took to write, in ms.
    fn enter(&mut self, state: usize) -> f64 {
        let t = Instant::now();
        if state == 0 {
            ruleset::delete_table(Some(&self.topo.node), Family::Inet, TABLE).unwrap();
        } else {
            self.socket
                .apply(&self.table.replacing_batch())
                .expect("the table applies");
        }
        let install = t.elapsed().as_secs_f64() * 1000.0;
        let probe = refused_probe(&self.topo.client);
        let want = if state == 0 { "reset" } else { "dropped" };
        assert_eq!(
            probe, want,
            "{}: a connect to port 8081 is {probe}",
            NAMES[state]
        );
        install
    }
}

/// Connect latency: `slices` times, `n` connects in each state in turn. The machine's load
/// drifts over seconds by more than the difference measured, so the states alternate
/// often and each slice's two medians are compared with each other (a paired ratio).
fn latency(bench: &mut States<'_>, slices: usize, n: usize) {
    let addr = SocketAddrV4::new(SERVER, 8080);
    let mut all: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut ratios = Vec::new();
    for slice in 0..slices {
        let mut medians = [0.0; 2];
        for state in 0..2 {
            bench.enter(state);
            let l: Vec<f64> = connect_latencies(&bench.topo.client, addr, n)
                .into_iter()
                .map(|d| d.as_secs_f64() * 1e6)
                .collect();
            medians[state] = median(l.clone());
            all[state].extend(l);
        }
        ratios.push(medians[1] / medians[0]);
        println!(
            "slice {}: connect median {:.1} µs {}, {:.1} µs {} ({n} connects each): ratio {:.3}",
            slice + 1,
            medians[0],
            NAMES[0],
            medians[1],
            NAMES[1],
            medians[1] / medians[0]
        );
    }
    let r = median(ratios.clone());
    println!(
        "connect latency over {slices} slices of {n} connects per state: medians {:.1} µs {}, {:.1} µs {} (p99 {:.1} / {:.1} µs); paired ratio median {r:.3} (spread {:.3}-{:.3}; target <= 1.10: {})",
        median(all[0].clone()),
        NAMES[0],
        median(all[1].clone()),
        NAMES[1],
        percentile(all[0].clone(), 0.99),
        percentile(all[1].clone(), 0.99),
        percentile(ratios.clone(), 0.0),
        percentile(ratios, 1.0),
        if r <= 1.10 { "met" } else { "NOT met" }
    );
}

/// iperf3 throughput, `rounds` runs of `secs` in each state in turn.
fn throughput(bench: &mut States<'_>, rounds: usize, secs: usize) {
    let mut gbit: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (state, name) in NAMES.iter().enumerate() {
            let install = bench.enter(state);
            let g = iperf(bench.topo.client.name(), secs);
            println!(
                "round {}: {name:<14}: iperf3 {} (table written in {install:.0} ms)",
                round + 1,
                g.map(|g| format!("{g:.2} Gbit/s"))
                    .unwrap_or_else(|| "failed".into()),
            );
            gbit[state].extend(g);
        }
    }
    if gbit[0].is_empty() || gbit[1].is_empty() {
        println!("throughput skipped: the iperf3 runs failed");
        return;
    }
    let (g0, g1) = (median(gbit[0].clone()), median(gbit[1].clone()));
    println!(
        "iperf3 throughput, medians over {rounds} rounds of {secs} s: no policy {g0:.2} Gbit/s, 1,001 policies {g1:.2} Gbit/s; ratio {:.3} (target >= 0.95: {})",
        g1 / g0,
        if g1 / g0 >= 0.95 { "met" } else { "NOT met" }
    );
}
