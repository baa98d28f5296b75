//! Issue 16's figures on real labs, in one run:
//!
//! 1. **`podnet observe` running vs not**, on a 2-node lab (vxlan), pod `p1` on node 1 to pod
//!    `p2` on node 2: TCP connect latency in `PODNET_BENCH_SLICES` (10) slices of
//!    `PODNET_BENCH_CONNECTS` (250) connects per state, the states alternating (and their
//!    order swapped every slice) with a paired ratio per slice, as the machine's load drifts
//!    more than the difference; then iperf3 (one TCP stream, `PODNET_BENCH_SECONDS` (4) s) in
//!    `PODNET_BENCH_ROUNDS` (3) rounds of each. "Running" is `podnet observe -o json` reading
//!    both nodes' conntrack events and NFLOG group, its output read by the bench (each
//!    slice's flows are counted, so the collector is proven to be at work); "not" is no
//!    collector and connection accounting off (`nf_conntrack_acct` 0, a node's default;
//!    observe turns it on). Per state: the CPU the two agents used and their RSS; with the
//!    collector on, its own CPU and RSS too (podnet's flow collector is the observe process,
//!    which reads the nodes' namespaces directly).
//! 2. **`podnet trace` answer time** on a `PODNET_BENCH_TRACE_NODES` (30) node lab with
//!    `PODNET_BENCH_SERVICES` (1000) Services (each selecting the server pod on the last
//!    node), every one in node 1's kernel table before the clock starts: the wall time of
//!    the whole command (start-up, API lists, every node's netlink reads) for pod → pod
//!    across nodes and pod → ClusterIP, median and max of `PODNET_BENCH_TRACES` (10) each.
//!
//! `cargo bench -p podnet --bench seeing` (`PODNET_BENCH_ONLY=observe` or `trace`). Needs
//! root and iperf3; prints "skipped" otherwise. Each lab is removed at the end, also after a
//! failure (its guard).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddrV4, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Lab, PODNET, is_root, wait_for};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::PostParams;
use podnet_kernel::NetNs;
use serde_json::{Value, json};

const NAMES: [&str; 2] = ["observe off", "observe on"];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn median(v: Vec<f64>) -> f64 {
    percentile(v, 0.5)
}

/// A child process the bench started: killed (by its PID) and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, s)| s).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3).
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    ticks / hz
}

/// A process's resident set, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// `podnet observe -o json` on the lab, its flows counted by a thread of the bench.
struct Observer {
    proc: Proc,
    flows: Arc<AtomicUsize>,
}

impl Observer {
    fn start(lab: &Lab) -> Observer {
        let mut child = Command::new(PODNET)
            .args(["--kubeconfig", &lab.kubeconfig, "observe", "-o", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start podnet observe");
        let out = child.stdout.take().unwrap();
        let flows = Arc::new(AtomicUsize::new(0));
        let counted = flows.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if serde_json::from_str::<Value>(&line).is_ok() {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Observer {
            proc: Proc(child),
            flows,
        }
    }

    fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    fn flows(&self) -> usize {
        self.flows.load(Ordering::Relaxed)
    }
}

/// Connect latencies (µs) from `client` to `addr`, after a warm-up.
fn connects(client: &NetNs, addr: SocketAddrV4, n: usize) -> Vec<f64> {
    client
        .run(|| {
            for _ in 0..20 {
                let _ = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2));
            }
            (0..n)
                .map(|_| {
                    let t = Instant::now();
                    let s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2))
                        .expect("connect to the server pod");
                    let us = t.elapsed().as_secs_f64() * 1e6;
                    drop(s);
                    us
                })
                .collect()
        })
        .unwrap()
}

/// One iperf3 run from `client` (a namespace path): Gbit/s received.
fn iperf(client: &Path, server: &str, seconds: usize) -> Option<f64> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", client.display()))
        .args(["--", "iperf3", "-c", server, "-p", "5301", "-J", "-t"])
        .arg(seconds.to_string())
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
}

/// What one state used while it was measured.
#[derive(Default, Clone, Copy)]
struct Usage {
    wall: f64,
    agents_cpu: f64,
    agents_rss: f64,
    observe_cpu: f64,
    observe_rss: f64,
}

/// The 2-node lab in one of the two states, switched in turn.
struct States<'a> {
    lab: &'a Lab,
    client: NetNs,
    server: SocketAddrV4,
    agents: [u32; 2],
    observer: Option<Observer>,
    used: [Usage; 2],
}

impl States<'_> {
    /// Puts the lab in `state` (0: no collector, accounting off; 1: `podnet observe`
    /// running and seen to report a connection).
    fn enter(&mut self, state: usize) {
        if state == 0 {
            self.observer = None;
            for i in 1..=2 {
                let ns = NetNs::open(&self.lab.node(i)).unwrap();
                podnet_kernel::sysctl::write(&ns, "net.netfilter.nf_conntrack_acct", "0")
                    .expect("turn connection accounting off");
            }
            return;
        }
        if self.observer.is_none() {
            let o = Observer::start(self.lab);
            wait_for(Duration::from_secs(20), "podnet observe reporting", || {
                connects(&self.client, self.server, 1);
                (o.flows() > 0)
                    .then_some(())
                    .ok_or("no flow yet".to_string())
            });
            self.observer = Some(o);
        }
    }

    /// Runs `work` in `state`, adding what the agents and the collector used to its tally.
    fn measured<R>(&mut self, state: usize, work: impl FnOnce(&Self) -> R) -> (R, usize) {
        self.enter(state);
        let agents = |s: &Self| s.agents.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
        let observe = |s: &Self| s.observer.as_ref().map(|o| cpu_seconds(o.pid()));
        let flows_before = self.observer.as_ref().map(Observer::flows).unwrap_or(0);
        let (a0, o0, t) = (agents(self), observe(self), Instant::now());
        let r = work(self);
        let wall = t.elapsed().as_secs_f64();
        let agents_cpu = agents(self) - a0;
        let rss: f64 = self.agents.iter().map(|&p| rss_mib(p)).fold(0.0, f64::max);
        let u = &mut self.used[state];
        u.wall += wall;
        u.agents_cpu += agents_cpu;
        u.agents_rss = u.agents_rss.max(rss);
        let mut flows = 0;
        if let (Some(o), Some(o0)) = (&self.observer, o0) {
            u.observe_cpu += cpu_seconds(o.pid()) - o0;
            u.observe_rss = u.observe_rss.max(rss_mib(o.pid()));
            // Its own output is read on another thread: give it a moment to catch up.
            std::thread::sleep(Duration::from_millis(300));
            flows = o.flows() - flows_before;
        }
        (r, flows)
    }
}

fn latency(s: &mut States<'_>, slices: usize, n: usize) {
    let mut all: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut ratios = Vec::new();
    for slice in 0..slices {
        let mut medians = [0.0; 2];
        let mut seen = 0;
        let order = if slice % 2 == 0 { [0, 1] } else { [1, 0] };
        for state in order {
            let (l, flows) = s.measured(state, |s| connects(&s.client, s.server, n));
            medians[state] = median(l.clone());
            all[state].extend(l);
            seen += flows;
        }
        ratios.push(medians[1] / medians[0]);
        println!(
            "slice {}: connect median {:.1} µs {}, {:.1} µs {} ({n} connects each, {seen} flows reported): ratio {:.3}",
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

fn throughput(s: &mut States<'_>, client: &Path, server: &str, rounds: usize, secs: usize) {
    let mut gbit: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for state in order {
            let (g, flows) = s.measured(state, |_| iperf(client, server, secs));
            println!(
                "round {}: {:<11}: iperf3 {} ({flows} flows reported)",
                round + 1,
                NAMES[state],
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
        "iperf3 throughput, medians over {rounds} rounds of {secs} s: {} {g0:.2} Gbit/s, {} {g1:.2} Gbit/s; ratio {:.3} (target >= 0.95: {})",
        NAMES[0],
        NAMES[1],
        g1 / g0,
        if g1 / g0 >= 0.95 { "met" } else { "NOT met" }
    );
}

fn usage(s: &States<'_>) {
    for (state, u) in s.used.iter().enumerate() {
        let mut line = format!(
            "{:<11}: the two agents used {:.1} % of a core together ({:.2} CPU s over {:.1} s), RSS max {:.1} MiB",
            NAMES[state],
            100.0 * u.agents_cpu / u.wall,
            u.agents_cpu,
            u.wall,
            u.agents_rss
        );
        if state == 1 {
            line.push_str(&format!(
                "; the collector (podnet observe) {:.1} % of a core, RSS max {:.1} MiB",
                100.0 * u.observe_cpu / u.wall,
                u.observe_rss
            ));
        }
        println!("{line}");
    }
}

fn observe_bench() {
    let lab = Lab::new("seeo", "172.31.87.0/24");
    lab.up(2, &[]);
    lab.server_pod("p1", 1);
    lab.server_pod("p2", 2);
    let ips = lab.ready_ips(&["p1", "p2"]);
    let p1 = lab.pod_netns("p1");
    let p2 = lab.pod_netns("p2");
    let _iperf = Proc(
        Command::new("nsenter")
            .arg(format!("--net={}", p2.display()))
            .args(["--", "iperf3", "-s", "-p", "5301"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 -s (apt-get install -y iperf3)"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut states = States {
        lab: &lab,
        client: NetNs::open_path(&p1).unwrap(),
        server: format!("{}:8080", ips["p2"]).parse().unwrap(),
        agents: [lab.agent_pid(1) as u32, lab.agent_pid(2) as u32],
        observer: None,
        used: [Usage::default(); 2],
    };
    latency(
        &mut states,
        env_usize("PODNET_BENCH_SLICES", 10),
        env_usize("PODNET_BENCH_CONNECTS", 250),
    );
    throughput(
        &mut states,
        &p1,
        &ips["p2"],
        env_usize("PODNET_BENCH_ROUNDS", 3),
        env_usize("PODNET_BENCH_SECONDS", 4),
    );
    usage(&states);
}

/// `n` Services `svc-NNNN` selecting `app: p2`, written 16 at a time.
fn services(lab: &Lab, n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&lab.kubeconfig).expect("the kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("kubeconfig");
        let api: Api<Service> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
        futures::stream::iter(0..n)
            .map(|i| {
                let api = api.clone();
                async move {
                    let svc: Service = serde_json::from_value(json!({
                        "metadata": {"name": format!("svc-{i:04}")},
                        "spec": {"selector": {"app": "p2"},
                                 "ports": [{"port": 80, "targetPort": 8080}]}
                    }))
                    .unwrap();
                    api.create(&PostParams::default(), &svc)
                        .await
                        .expect("create a Service");
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    });
}

/// One `podnet trace SRC DST -o json`: its wall time (s) and verdict.
fn timed_trace(lab: &Lab, src: &str, dst: &str) -> (f64, String) {
    let t = Instant::now();
    let out = lab.podnet(&["trace", src, dst, "-o", "json"], "");
    let secs = t.elapsed().as_secs_f64();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (secs, v["verdict"].as_str().unwrap_or("failed").to_string())
}

fn trace_bench() {
    let nodes = env_usize("PODNET_BENCH_TRACE_NODES", 30) as u32;
    let n = env_usize("PODNET_BENCH_SERVICES", 1000);
    let lab = Lab::new("seet", "172.31.88.0/24");
    let t = Instant::now();
    lab.up(nodes, &[]);
    lab.server_pod("p1", 1);
    lab.server_pod("p2", nodes);
    lab.ready_ips(&["p1", "p2"]);
    println!(
        "{nodes}-node lab up, two pods Ready: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    services(&lab, n);
    let last = format!("svc/default/svc-{:04}:80", n - 1);
    wait_for(
        Duration::from_secs(120),
        "the last Service in node 1's kernel",
        || match timed_trace(&lab, "default/p1", &last) {
            (_, v) if v == "delivered" => Ok(()),
            (_, v) => Err(v),
        },
    );
    println!(
        "{n} Services written and the last delivered to p2 in node 1's kernel: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let traces = env_usize("PODNET_BENCH_TRACES", 10);
    for (what, dst) in [
        ("pod -> pod across nodes", "default/p2:8080".to_string()),
        ("pod -> ClusterIP", String::new()),
    ] {
        let times: Vec<f64> = (0..traces)
            .map(|k| {
                let dst = if dst.is_empty() {
                    format!("svc/default/svc-{:04}:80", (k * 97) % n)
                } else {
                    dst.clone()
                };
                let (secs, verdict) = timed_trace(&lab, "default/p1", &dst);
                assert_eq!(verdict, "delivered", "trace default/p1 {dst}");
                secs
            })
            .collect();
        let (med, max) = (median(times.clone()), percentile(times, 1.0));
        println!(
            "trace {what} on {nodes} nodes with {n} Services: median {:.0} ms, max {:.0} ms over {traces} (target < 1 s: {})",
            med * 1000.0,
            max * 1000.0,
            if max < 1.0 { "met" } else { "NOT met" }
        );
    }
}

fn main() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    if Command::new("iperf3").arg("--version").output().is_err() {
        println!("skipped: needs iperf3 (apt-get install -y iperf3)");
        return;
    }
    let only = std::env::var("PODNET_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only.contains("observe") {
        observe_bench();
    }
    if only.is_empty() || only.contains("trace") {
        trace_bench();
    }
}
