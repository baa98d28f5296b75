//! Issue 16's figures on real labs, in one run:
//!
//! 1. **A flow collector running vs not**, on a 2-node lab (vxlan), pod `p1` on node 1 to
//!    pod `p2` on node 2, in four states: no collector (connection accounting off,
//!    `nf_conntrack_acct` 0, a node's default); the reference, conntrack-tools' `conntrack
//!    -E` in each node namespace (reading the kernel's events); `podnet observe -o json`
//!    (its default: table dumps compared, twice a second); and `podnet observe --events`
//!    (ctnetlink's events, drained twice a second). TCP connect latency in
//!    `PODNET_BENCH_SLICES` (12) slices of `PODNET_BENCH_CONNECTS` (250) connects per
//!    state, the states' order rotated every slice, with paired ratios of each slice's
//!    medians (the machine's load drifts more than the differences); then iperf3 (one TCP
//!    stream, `PODNET_BENCH_SECONDS` (4) s) in `PODNET_BENCH_ROUNDS` (4) rounds of each.
//!    Each collector writes to a file whose lines are counted (so it is seen at work; a
//!    pipe read by the bench would wake it per line). Per state: the CPU the two agents
//!    used and their RSS, and the collector's CPU and RSS (podnet's collector is the
//!    observe process, which reads the nodes' namespaces itself).
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
#[path = "support/connects.rs"]
mod connects;

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Lab, PODNET, is_root, wait_for};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::PostParams;
use podnet_kernel::NetNs;
use serde_json::{Value, json};

const NAMES: [&str; N] = [
    "no collector",
    "conntrack -E",
    "podnet observe",
    "podnet observe --events",
];
const N: usize = 4;
const OFF: usize = 0;
const REFERENCE: usize = 1;
const OBSERVE: usize = 2;
const EVENTS: usize = 3;

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

/// A flow collector of the lab, its output lines counted: podnet's
/// (`podnet observe -o json`, one process for all nodes) or the reference, conntrack-tools'
/// `conntrack -E` (one per node namespace, reading the same kernel events).
struct Collector {
    procs: Vec<Proc>,
    /// Where each process writes (a file: a pipe read by the bench would wake it per line).
    logs: Vec<PathBuf>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.procs.clear();
        for l in &self.logs {
            let _ = std::fs::remove_file(l);
        }
    }
}

impl Collector {
    fn start(lab: &Lab, state: usize) -> Collector {
        let commands: Vec<Command> = if state == OBSERVE || state == EVENTS {
            let mut c = Command::new(PODNET);
            c.args(["--kubeconfig", &lab.kubeconfig, "observe", "-o", "json"]);
            if state == EVENTS {
                c.arg("--events");
            }
            vec![c]
        } else {
            (1..=2)
                .map(|i| {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", &lab.node(i), "conntrack", "-E"]);
                    if let Ok(events) = std::env::var("PODNET_BENCH_CT_EVENTS") {
                        c.args(["-e", &events]);
                    }
                    c
                })
                .collect()
        };
        let logs: Vec<PathBuf> = (0..commands.len())
            .map(|i| {
                std::env::temp_dir().join(format!("podnet-seeing-{}-{i}.log", std::process::id()))
            })
            .collect();
        let procs = commands
            .into_iter()
            .zip(&logs)
            .map(|(mut c, log)| {
                let file = std::fs::File::create(log).expect("the collector's log file");
                Proc(
                    c.stdin(Stdio::null())
                        .stdout(file)
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("start the flow collector (apt-get install -y conntrack)"),
                )
            })
            .collect();
        Collector { procs, logs }
    }

    /// The collector's processes (for `ip netns exec`, the one it became).
    fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.0.id()).collect()
    }

    fn cpu(&self) -> f64 {
        self.pids().into_iter().map(cpu_seconds).sum()
    }

    fn rss(&self) -> f64 {
        self.pids().into_iter().map(rss_mib).sum()
    }

    /// The lines the collector has written so far.
    fn flows(&self) -> usize {
        self.logs
            .iter()
            .map(|l| {
                let text = std::fs::read(l).unwrap_or_default();
                text.iter().filter(|&&b| b == b'\n').count()
            })
            .sum()
    }
}

/// Connect latencies (µs) from `client` to `addr`.
fn connects(client: &NetNs, addr: SocketAddrV4, n: usize) -> Vec<f64> {
    connects::connect_latencies(client, addr, n)
        .into_iter()
        .map(|d| d.as_secs_f64() * 1e6)
        .collect()
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
    collector_cpu: f64,
    collector_rss: f64,
}

/// The 2-node lab in one of the states, switched in turn.
struct States<'a> {
    lab: &'a Lab,
    client: NetNs,
    server: SocketAddrV4,
    agents: [u32; 2],
    /// The running collector and the state it belongs to.
    collector: Option<(usize, Collector)>,
    used: [Usage; N],
}

impl States<'_> {
    /// Puts the lab in `state`: no collector with accounting off, or a collector running
    /// and seen to report a connection.
    fn enter(&mut self, state: usize) {
        if self.collector.as_ref().is_some_and(|(s, _)| *s == state) {
            return;
        }
        self.collector = None;
        for i in 1..=2 {
            let ns = NetNs::open(&self.lab.node(i)).unwrap();
            let acct = if state == OFF { "0" } else { "1" };
            podnet_kernel::sysctl::write(&ns, "net.netfilter.nf_conntrack_acct", acct)
                .expect("set connection accounting");
        }
        if state == OFF {
            return;
        }
        let c = Collector::start(self.lab, state);
        wait_for(Duration::from_secs(20), "the collector reporting", || {
            connects(&self.client, self.server, 1);
            (c.flows() > 0)
                .then_some(())
                .ok_or("no flow yet".to_string())
        });
        self.collector = Some((state, c));
    }

    /// Runs `work` in `state`, adding what the agents and the collector used to its tally;
    /// with the flows the collector reported meanwhile.
    fn measured<R>(&mut self, state: usize, work: impl FnOnce(&Self) -> R) -> (R, usize) {
        self.enter(state);
        let agents = |s: &Self| s.agents.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
        let collector = |s: &Self| s.collector.as_ref().map(|(_, c)| (c.cpu(), c.flows()));
        let (a0, c0, t) = (agents(self), collector(self), Instant::now());
        let r = work(self);
        let wall = t.elapsed().as_secs_f64();
        let agents_cpu = agents(self) - a0;
        let rss: f64 = self.agents.iter().map(|&p| rss_mib(p)).fold(0.0, f64::max);
        let u = &mut self.used[state];
        u.wall += wall;
        u.agents_cpu += agents_cpu;
        u.agents_rss = u.agents_rss.max(rss);
        let mut flows = 0;
        if let (Some((_, c)), Some((cpu0, flows0))) = (&self.collector, c0) {
            u.collector_cpu += c.cpu() - cpu0;
            u.collector_rss = u.collector_rss.max(c.rss());
            // It reads the kernel twice a second: give it the time to write what it saw.
            std::thread::sleep(Duration::from_millis(700));
            flows = c.flows() - flows0;
        }
        (r, flows)
    }
}

/// The states in the order of round `k`: rotated, so none always follows another.
fn order(k: usize) -> [usize; N] {
    let mut o = [OFF, REFERENCE, OBSERVE, EVENTS];
    o.rotate_left(k % N);
    o
}

/// Paired ratios of each slice's medians: with a collector / without, and podnet's event
/// mode / the reference, which reads the same events.
const PAIRS: [(usize, usize); 4] = [
    (OBSERVE, OFF),
    (EVENTS, OFF),
    (REFERENCE, OFF),
    (EVENTS, REFERENCE),
];

fn latency(s: &mut States<'_>, slices: usize, n: usize) {
    let mut all: [Vec<f64>; N] = Default::default();
    let mut ratios: [Vec<f64>; PAIRS.len()] = Default::default();
    for slice in 0..slices {
        let mut medians = [0.0; N];
        let mut seen = [0; N];
        for state in order(slice) {
            let (l, flows) = s.measured(state, |s| connects(&s.client, s.server, n));
            medians[state] = median(l.clone());
            all[state].extend(l);
            seen[state] = flows;
        }
        for (k, (a, b)) in PAIRS.iter().enumerate() {
            ratios[k].push(medians[*a] / medians[*b]);
        }
        let shown: Vec<String> = (0..N)
            .map(|i| format!("{:.1} µs {} ({} lines)", medians[i], NAMES[i], seen[i]))
            .collect();
        println!(
            "slice {}: connect median {}; {n} connects each",
            slice + 1,
            shown.join(", ")
        );
    }
    println!(
        "connect latency over {slices} slices of {n} connects per state: medians {}",
        (0..N)
            .map(|i| format!(
                "{:.1} µs {} (p99 {:.1})",
                median(all[i].clone()),
                NAMES[i],
                percentile(all[i].clone(), 0.99)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (k, (a, b)) in PAIRS.iter().enumerate() {
        let r = median(ratios[k].clone());
        let target = if *b == OFF && *a != REFERENCE {
            format!(
                "; target <= 1.10: {}",
                if r <= 1.10 { "met" } else { "NOT met" }
            )
        } else {
            String::new()
        };
        println!(
            "  paired ratio {} / {}: median {r:.3} (spread {:.3}-{:.3}){target}",
            NAMES[*a],
            NAMES[*b],
            percentile(ratios[k].clone(), 0.0),
            percentile(ratios[k].clone(), 1.0),
        );
    }
}

fn throughput(s: &mut States<'_>, client: &Path, server: &str, rounds: usize, secs: usize) {
    let mut gbit: [Vec<f64>; N] = Default::default();
    for round in 0..rounds {
        for state in order(round) {
            let (g, flows) = s.measured(state, |_| iperf(client, server, secs));
            println!(
                "round {}: {:<23}: iperf3 {} ({flows} lines)",
                round + 1,
                NAMES[state],
                g.map(|g| format!("{g:.2} Gbit/s"))
                    .unwrap_or_else(|| "failed".into()),
            );
            gbit[state].extend(g);
        }
    }
    if gbit.iter().any(Vec::is_empty) {
        println!("throughput skipped: iperf3 runs failed");
        return;
    }
    let g: Vec<f64> = gbit.iter().map(|v| median(v.clone())).collect();
    let shown: Vec<String> = (0..N)
        .map(|i| format!("{} {:.2} Gbit/s", NAMES[i], g[i]))
        .collect();
    println!(
        "iperf3 throughput, medians over {rounds} rounds of {secs} s: {}",
        shown.join(", ")
    );
    for i in [OBSERVE, EVENTS, REFERENCE] {
        let r = g[i] / g[OFF];
        let target = if i == REFERENCE {
            String::new()
        } else {
            format!(
                " (target >= 0.95: {})",
                if r >= 0.95 { "met" } else { "NOT met" }
            )
        };
        println!("  {} / {}: {r:.3}{target}", NAMES[i], NAMES[OFF]);
    }
}

fn usage(s: &States<'_>) {
    for (state, u) in s.used.iter().enumerate() {
        let mut line = format!(
            "{:<23}: the two agents used {:.1} % of a core together ({:.2} CPU s over {:.1} s), RSS max {:.1} MiB",
            NAMES[state],
            100.0 * u.agents_cpu / u.wall,
            u.agents_cpu,
            u.wall,
            u.agents_rss
        );
        if state != OFF {
            line.push_str(&format!(
                "; the collector {:.1} % of a core, RSS {:.1} MiB",
                100.0 * u.collector_cpu / u.wall,
                u.collector_rss
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
        collector: None,
        used: [Usage::default(); N],
    };
    latency(
        &mut states,
        env_usize("PODNET_BENCH_SLICES", 12),
        env_usize("PODNET_BENCH_CONNECTS", 250),
    );
    throughput(
        &mut states,
        &p1,
        &ips["p2"],
        env_usize("PODNET_BENCH_ROUNDS", 4),
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
