//! Issue 14 (a) on a real lab: the time from a NetworkPolicy create written through the
//! API until it is enforced on EVERY node of a 3-node lab (`podnet lab up --nodes 3`),
//! p50/p99 over `PODNET_BENCH_CHANGES` (100) changes; and from its delete until the traffic
//! passes again. First with no other policy, then with a background of
//! `PODNET_BENCH_POLICIES` (1000) policies over `PODNET_BENCH_PODS` (1000) pods in
//! `PODNET_BENCH_NAMESPACES` (100) namespaces (the synthetic cluster of
//! `crates/policy/benches/shape/`; the pods are API objects with addresses, bound to
//! nodes that do not exist, so they sit in every node's address sets, and nothing runs
//! them). With the background in, the agents' and the apiserver's RSS is printed too.
//!
//! In namespace `default`, pods `server-<i>` (`role=server`, TCP 8080) and `client-<i>`
//! run on node i. A change creates `deny-<n>` (`podSelector: {role: server}`, ingress
//! isolation and no rule), then deletes it. "Enforced" (`PODNET_BENCH_ENFORCED`):
//! - `probe` (default): a real probe refused. In each node, a thread inside `client-<i>`
//!   opens a new TCP connection to `server-<i>` every `PODNET_BENCH_PROBE_GAP_MS` (1) ms;
//!   the policy is enforced on that node at the start of the first attempt that gets no
//!   answer in 200 ms (the policy drops, so a refused connect times out), confirmed by a
//!   second one, and the policy's chain `in-default/deny-<n>` is then checked in the
//!   node's kernel table over netlink. After the delete, it is open again at the start of
//!   the first attempt that connects (attempts time out after 10 ms: that resolution).
//! - `chain`: the chain `in-default/deny-<n>` present in (then gone from) the node's
//!   kernel table, read over netlink in the node's namespace in a tight loop (1 ms apart).
//!
//! The clock starts before the API write. Needs root; prints "skipped" otherwise. The lab
//! is removed at the end, also after a failure (guard).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../../policy/benches/shape/mod.rs"]
mod shape;

use std::io::ErrorKind;
use std::net::{SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use podnet_kernel::NetNs;
use podnet_kernel::nftnl::{Family, NftSocket};
use serde_json::json;
use shape::{Shape, env_usize, percentile};

const NODES: u32 = 3;
const TABLE: &str = "podnet-policy";
/// How long one change may take to be enforced on every node.
const ENFORCED_WITHIN: Duration = Duration::from_secs(10);
/// How long the background may take to be in every node's table.
const BACKGROUND_WITHIN: Duration = Duration::from_secs(300);
/// A connect that gets no answer this long was refused (dropped).
const REFUSED_AFTER: Duration = Duration::from_millis(200);
/// How long a connect may take while waiting for the traffic to pass again.
const OPEN_ATTEMPT: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Probe,
    Chain,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Want {
    /// The policy enforced.
    Enforced,
    /// The policy gone.
    Lifted,
}

/// One node's watcher: told what to wait for (and the policy's chain), it answers with
/// the moment it saw it.
struct Watcher {
    tx: mpsc::Sender<(Want, String, Instant)>,
    rx: mpsc::Receiver<Result<Instant, String>>,
}

/// Whether the node's table holds `chain`, read over netlink.
fn has_chain(socket: &mut NftSocket, chain: &str) -> Result<bool, String> {
    let tables = socket
        .list_tables(Some(Family::Inet), |n| n == TABLE)
        .map_err(|e| e.to_string())?;
    Ok(tables
        .iter()
        .any(|t| t.chains.iter().any(|c| c.name == chain)))
}

impl Watcher {
    fn start(
        mode: Mode,
        node_ns: String,
        client: PathBuf,
        server: SocketAddrV4,
        gap: Duration,
    ) -> Watcher {
        let (tx, cmd_rx) = mpsc::channel::<(Want, String, Instant)>();
        let (res_tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let node = NetNs::open(&node_ns).expect("open the node's namespace");
            let mut socket = NftSocket::open(Some(&node)).expect("netfilter socket in the node");
            if mode == Mode::Probe {
                NetNs::open_path(&client)
                    .and_then(|ns| ns.enter())
                    .expect("enter the client pod's namespace");
            }
            for (want, chain, deadline) in cmd_rx {
                let result = match mode {
                    Mode::Probe => probe(want, server, gap, deadline).and_then(|t| {
                        // The refusal is the policy's: its chain is in the kernel.
                        let present = has_chain(&mut socket, &chain)?;
                        if present == (want == Want::Enforced) {
                            Ok(t)
                        } else {
                            Err(format!(
                                "{want:?} by probe, but chain {chain} present: {present}"
                            ))
                        }
                    }),
                    Mode::Chain => poll_chain(&mut socket, want, &chain, deadline),
                };
                if res_tx.send(result).is_err() {
                    break;
                }
            }
        });
        Watcher { tx, rx }
    }
}

/// Probes until the connection is refused (`Enforced`) or passes (`Lifted`); when.
fn probe(
    want: Want,
    server: SocketAddrV4,
    gap: Duration,
    deadline: Instant,
) -> Result<Instant, String> {
    let addr = server.into();
    while Instant::now() < deadline {
        let t0 = Instant::now();
        match want {
            Want::Enforced => match TcpStream::connect_timeout(&addr, REFUSED_AFTER) {
                Ok(s) => {
                    drop(s);
                    std::thread::sleep(gap);
                }
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    match TcpStream::connect_timeout(&addr, REFUSED_AFTER) {
                        Err(e) if e.kind() == ErrorKind::TimedOut => return Ok(t0),
                        // A lost SYN, not the policy.
                        Ok(_) => continue,
                        Err(e) => return Err(format!("probe to {server}: {e}")),
                    }
                }
                Err(e) => return Err(format!("probe to {server}: {e}")),
            },
            Want::Lifted => match TcpStream::connect_timeout(&addr, OPEN_ATTEMPT) {
                Ok(_) => return Ok(t0),
                Err(e) if e.kind() == ErrorKind::TimedOut => {}
                Err(e) => return Err(format!("probe to {server}: {e}")),
            },
        }
    }
    Err(format!(
        "{want:?} not seen by the probes to {server} in time"
    ))
}

/// Reads the node's table until `chain` is there (`Enforced`) or gone (`Lifted`); when
/// (the end of the read that saw it).
fn poll_chain(
    socket: &mut NftSocket,
    want: Want,
    chain: &str,
    deadline: Instant,
) -> Result<Instant, String> {
    while Instant::now() < deadline {
        if has_chain(socket, chain)? == (want == Want::Enforced) {
            return Ok(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(format!("chain {chain} not {want:?} in time"))
}

fn bench_pods(lab: &common::Lab) -> String {
    let mut manifest = String::new();
    for i in 1..=NODES {
        for role in ["server", "client"] {
            manifest.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {role}-{i}, labels: {{role: {role}}}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: srv\n    image: podnet\n    command: [\"{bin}\", \"probe\", \"serve\", \"--tcp\", \"0.0.0.0:8080\"]\n    readinessProbe:\n      tcpSocket: {{port: 8080}}\n      periodSeconds: 1\n",
                node = lab.node(i),
                bin = common::PODNET,
            ));
        }
    }
    manifest
}

fn deny(n: usize) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": format!("deny-{n}"), "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"role": "server"}}, "policyTypes": ["Ingress"]}
    }))
    .unwrap()
}

struct Bench {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
    watchers: Vec<Watcher>,
    next: usize,
}

impl Bench {
    /// Tells every watcher what to wait for; the time per node (ms) from `started`.
    fn wait_all(&self, want: Want, chain: &str, started: Instant) -> Result<Vec<f64>, String> {
        let deadline = started + ENFORCED_WITHIN;
        for w in &self.watchers {
            w.tx.send((want, chain.to_string(), deadline)).unwrap();
        }
        let mut times = Vec::new();
        let mut errors = Vec::new();
        for (i, w) in self.watchers.iter().enumerate() {
            match w.rx.recv() {
                Ok(Ok(at)) => {
                    times.push(at.saturating_duration_since(started).as_secs_f64() * 1000.0)
                }
                Ok(Err(e)) => errors.push(format!("node{}: {e}", i + 1)),
                Err(e) => errors.push(format!("node{}: {e}", i + 1)),
            }
        }
        if errors.is_empty() {
            Ok(times)
        } else {
            Err(errors.join("; "))
        }
    }

    /// One create and one delete: the times per node of each.
    fn change(&mut self) -> (Vec<f64>, Vec<f64>) {
        let policy = deny(self.next);
        self.next += 1;
        let name = policy.metadata.name.clone().unwrap();
        let chain = format!("in-default/{name}");
        let api: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), "default");
        let started = Instant::now();
        self.rt
            .block_on(api.create(&PostParams::default(), &policy))
            .expect("create the policy");
        let created = self
            .wait_all(Want::Enforced, &chain, started)
            .unwrap_or_else(|e| panic!("{name} not enforced on every node: {e}"));
        let started = Instant::now();
        self.rt
            .block_on(api.delete(&name, &DeleteParams::default()))
            .expect("delete the policy");
        let deleted = self
            .wait_all(Want::Lifted, &chain, started)
            .unwrap_or_else(|e| panic!("{name} still enforced after its delete: {e}"));
        (created, deleted)
    }

    fn measure(&mut self, changes: usize, what: &str, mode: Mode) {
        let before = cpu_snapshot(&lab_name());
        let wall = Instant::now();
        let mut every = [Vec::new(), Vec::new()];
        let mut per_node = [
            vec![Vec::new(); NODES as usize],
            vec![Vec::new(); NODES as usize],
        ];
        for _ in 0..changes {
            let (c, d) = self.change();
            for (k, times) in [c, d].into_iter().enumerate() {
                every[k].push(times.iter().cloned().fold(0.0, f64::max));
                for (i, t) in times.into_iter().enumerate() {
                    per_node[k][i].push(t);
                }
            }
        }
        let after = cpu_snapshot(&lab_name());
        let per_change: Vec<String> = before
            .iter()
            .zip(&after)
            .map(|((c, a), (_, b))| format!("{c} {:.1}", (b - a) / changes as f64))
            .collect();
        println!(
            "{NODES} nodes, {what}: CPU per change (a create and a delete, {:.0} ms of wall time each), ms: {}",
            wall.elapsed().as_secs_f64() * 1000.0 / changes as f64,
            per_change.join(", ")
        );
        let how = match mode {
            Mode::Probe => ["a probe refused", "a probe passes"],
            Mode::Chain => ["its chain in the kernel", "its chain gone"],
        };
        for (k, verb) in ["create -> enforced", "delete -> lifted"]
            .iter()
            .enumerate()
        {
            println!(
                "{NODES} nodes, {what}: NetworkPolicy {verb} on every node ({}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {changes} changes",
                how[k],
                percentile(every[k].clone(), 0.5),
                percentile(every[k].clone(), 0.99),
                percentile(every[k].clone(), 1.0),
            );
            let nodes: Vec<String> = per_node[k]
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    format!(
                        "node{} p50 {:.1} / p99 {:.1}",
                        i + 1,
                        percentile(t.clone(), 0.5),
                        percentile(t.clone(), 0.99)
                    )
                })
                .collect();
            println!("  per node: {}", nodes.join(", "));
        }
        if mode == Mode::Probe {
            let ms = percentile(every[0].clone(), 0.99);
            println!(
                "  target p99 <= 100 ms (create -> enforced): {}",
                if ms <= 100.0 { "met" } else { "NOT met" }
            );
        }
    }

    /// The background cluster, written 16 objects at a time; then waits until every
    /// node's table has the last policy.
    fn background(&mut self, shape: &Shape) {
        let t = Instant::now();
        let client = self.client.clone();
        self.rt.block_on(async {
            let nss: Api<Namespace> = Api::all(client.clone());
            for ns in shape.typed_namespaces() {
                nss.create(&PostParams::default(), &ns)
                    .await
                    .expect("create a namespace");
            }
            futures::stream::iter(0..shape.pods)
                .map(|g| {
                    let client = client.clone();
                    async move {
                        let pod: Pod = serde_json::from_value(shape.pod(g, true)).unwrap();
                        let ns = pod.metadata.namespace.clone().unwrap();
                        let api: Api<Pod> = Api::namespaced(client, &ns);
                        let made = api
                            .create(&PostParams::default(), &pod)
                            .await
                            .expect("create a pod");
                        if made
                            .status
                            .as_ref()
                            .and_then(|s| s.pod_ip.as_ref())
                            .is_none()
                        {
                            let mut with = made.clone();
                            with.status = pod.status.clone();
                            api.replace_status(
                                made.metadata.name.as_deref().unwrap(),
                                &PostParams::default(),
                                &with,
                            )
                            .await
                            .expect("write the pod's status");
                        }
                    }
                })
                .buffer_unordered(16)
                .collect::<Vec<()>>()
                .await;
            futures::stream::iter(0..shape.policies)
                .map(|q| {
                    let client = client.clone();
                    async move {
                        let p: NetworkPolicy = serde_json::from_value(shape.policy(q)).unwrap();
                        let ns = p.metadata.namespace.clone().unwrap();
                        Api::<NetworkPolicy>::namespaced(client, &ns)
                            .create(&PostParams::default(), &p)
                            .await
                            .expect("create a policy");
                    }
                })
                .buffer_unordered(16)
                .collect::<Vec<()>>()
                .await;
        });
        println!(
            "background written through the API: {} namespaces, {} pods, {} policies in {:.1} s",
            shape.namespaces,
            shape.pods,
            shape.policies,
            t.elapsed().as_secs_f64()
        );
        // The last policy's chain on every node: the agents have caught up.
        let last: NetworkPolicy = serde_json::from_value(shape.policy(shape.policies - 1)).unwrap();
        let name = format!(
            "{}/{}",
            last.metadata.namespace.as_deref().unwrap(),
            last.metadata.name.as_deref().unwrap()
        );
        let t = Instant::now();
        let mut sockets: Vec<NftSocket> = self
            .watchers
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let ns = NetNs::open(&format!("{}-node{}", lab_name(), i + 1)).unwrap();
                NftSocket::open(Some(&ns)).unwrap()
            })
            .collect();
        for s in &mut sockets {
            loop {
                let done = has_chain(s, &format!("in-{name}")).unwrap()
                    || has_chain(s, &format!("out-{name}")).unwrap();
                if done {
                    break;
                }
                assert!(
                    t.elapsed() < BACKGROUND_WITHIN,
                    "the background is not synced on every node"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        println!(
            "every node's table had the background {:.1} s after the last write",
            t.elapsed().as_secs_f64()
        );
    }
}

fn lab_name() -> String {
    format!("bpol{}", std::process::id() % 100_000)
}

/// (component, pid) of the lab's processes, from its processes.json.
fn lab_processes(lab: &str) -> Vec<(String, i64)> {
    let path = format!("/run/podnet/{lab}/processes.json");
    let doc: serde_json::Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    doc["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["component"].as_str()?.to_string(), p["pid"].as_i64()?)))
        .collect()
}

/// CPU time (user + system) a process has used, in ms; `self` for this one.
fn cpu_ms(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) * 10.0
}

/// The CPU time of the apiserver, each agent and this bench (its probes), in ms.
fn cpu_snapshot(lab: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = lab_processes(lab)
        .into_iter()
        .filter(|(c, _)| c == "agent" || c == "apiserver")
        .map(|(c, pid)| (c, cpu_ms(&pid.to_string())))
        .collect();
    out.push(("bench (probes)".into(), cpu_ms("self")));
    out
}

/// The lab's processes' RSS: apiserver, and each agent.
fn print_rss(lab: &str, when: &str) {
    let path = format!("/run/podnet/{lab}/processes.json");
    let doc: serde_json::Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let mut parts = Vec::new();
    for p in doc["processes"].as_array().into_iter().flatten() {
        let (Some(component), Some(pid)) = (p["component"].as_str(), p["pid"].as_i64()) else {
            continue;
        };
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<f64>().ok())
            });
        if let Some(kib) = rss
            && (component == "agent" || component == "apiserver")
        {
            parts.push(format!("{component} {:.1} MiB", kib / 1024.0));
        }
    }
    println!("RSS {when}: {}", parts.join(", "));
}

fn main() {
    if !common::is_root() {
        eprintln!("policy bench skipped: needs root (it builds a lab)");
        return;
    }
    let changes = env_usize("PODNET_BENCH_CHANGES", 100).max(1);
    let policies = env_usize("PODNET_BENCH_POLICIES", 1000);
    let pods = env_usize("PODNET_BENCH_PODS", 1000);
    let namespaces = env_usize("PODNET_BENCH_NAMESPACES", 100);
    let gap = Duration::from_millis(env_usize("PODNET_BENCH_PROBE_GAP_MS", 1) as u64);
    let mode = match std::env::var("PODNET_BENCH_ENFORCED").as_deref() {
        Ok("chain") => Mode::Chain,
        Ok("probe") | Err(_) => Mode::Probe,
        Ok(other) => panic!("PODNET_BENCH_ENFORCED={other:?}: probe or chain"),
    };
    let lab = common::Lab::new("bpol", "172.31.90.0/24");
    assert_eq!(lab.name, lab_name());
    lab.up(NODES, &[]);
    lab.apply(&bench_pods(&lab));
    let servers: Vec<String> = (1..=NODES).map(|i| format!("server-{i}")).collect();
    let clients: Vec<String> = (1..=NODES).map(|i| format!("client-{i}")).collect();
    let names: Vec<&str> = servers.iter().chain(&clients).map(String::as_str).collect();
    let ips = lab.ready_ips(&names);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client = rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&lab.kubeconfig).expect("read the kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("kubeconfig");
        kube::Client::try_from(config).expect("API client")
    });
    let watchers = (1..=NODES)
        .map(|i| {
            let server: SocketAddrV4 = format!("{}:8080", ips[&format!("server-{i}")])
                .parse()
                .unwrap();
            Watcher::start(
                mode,
                lab.node(i),
                lab.pod_netns(&format!("client-{i}")),
                server,
                gap,
            )
        })
        .collect();
    let mut bench = Bench {
        rt,
        client,
        watchers,
        next: 0,
    };
    println!(
        "policy bench: {NODES}-node lab, enforced = {}",
        match mode {
            Mode::Probe => "a probe refused (and the chain then checked in the kernel)",
            Mode::Chain =>
                "the policy's chain in the node's kernel table (netlink, polled every 1 ms)",
        }
    );
    // A first change, not counted: the agents' first policy.
    bench.change();
    print_rss(&lab.name, "before the background");
    bench.measure(changes, "no other policy", mode);
    if policies > 0 {
        let mut shape = Shape::new(namespaces, pods, policies, 10);
        shape.nodes = (0..10).map(|k| format!("ghost-node-{k}")).collect();
        shape.first_subnet = "10.245.0.0".parse().unwrap();
        bench.background(&shape);
        print_rss(
            &lab.name,
            &format!("with {policies} policies, {pods} pods, {namespaces} namespaces"),
        );
        bench.change();
        bench.measure(
            changes,
            &format!("{policies} background policies over {pods} pods in {namespaces} namespaces"),
            mode,
        );
        print_rss(&lab.name, "after the changes");
    }
}
