//! Cross-node pod throughput and latency of each podnet backend, next to hand-built kernel
//! paths, in one run: iperf3 (Debian's `iperf3`), a single TCP stream from a pod on one node
//! to a pod on another, `PODNET_BENCH_SECONDS` (10) per run, median of `PODNET_BENCH_RUNS`
//! (3) runs, every path built first and measured round-robin (one run of each per round, so
//! load from elsewhere weighs on all alike); then the median RTT of 100 pings 10 ms apart.
//!
//! - podnet: a 2-node lab per backend (`podnet lab up --backend …`), two pods;
//! - (a) a bare veth between two namespaces (the ceiling);
//! - (b) kernel vxlan built by hand on the lab's topology (underlay switch bridge, two node
//!   namespaces, a cni0 bridge and a pod on each), with the pod MTU vxlan gets (1450);
//! - (c) the same topology routed by hand (`pod subnet via node IP`, pod MTU 1500).
//!
//! Ratios: podnet vxlan / (b), host-gw / (c), udp / (b). A backend that is not built (or fails
//! to come up) is reported as such. Everything happens in namespaces the bench creates and
//! removes (also on failure). The hand-built paths use `ip` on purpose: they are the
//! reference, made the way an operator would. Needs root.
//!
//! `cargo bench -p podnet --bench overlay` (PODNET_BENCH_ONLY=vxlan,host-gw to choose).

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PODNET: &str = env!("CARGO_BIN_EXE_podnet");
/// The underlay of the podnet labs and the hand-built paths (one /24 each).
const UNDERLAYS: [&str; 3] = ["172.31.81.0/24", "172.31.82.0/24", "172.31.83.0/24"];
const HAND_UNDERLAY: &str = "172.31.84";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), text(&out)))
    }
}

/// `ip -n NS ARGS` (or `ip ARGS` for `None`).
fn ip(ns: &str, args: &str) -> Result<String, String> {
    let mut all = vec!["-n", ns];
    all.extend(args.split_whitespace());
    run("ip", &all)
}

/// One measured path: where the client and server run (network namespace paths) and the
/// server's address.
struct Path {
    client: String,
    server: String,
    server_ip: String,
}

/// A running process the bench started: killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nsenter(netns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={netns}")).arg("--").args(args);
    cmd
}

/// Starts the iperf3 server of a path (stopped when the returned guard drops).
fn start_server(path: &Path) -> Result<Proc, String> {
    let server = nsenter(&path.server, &["iperf3", "-s", "-p", "5301"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("iperf3 -s: {e} (apt-get install -y iperf3)"))?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(Proc(server))
}

/// One iperf3 run of `seconds`: Gbit/s received.
fn throughput(path: &Path, seconds: u64) -> Result<f64, String> {
    let secs = seconds.to_string();
    let out = nsenter(
        &path.client,
        &[
            "iperf3",
            "-c",
            &path.server_ip,
            "-p",
            "5301",
            "-t",
            &secs,
            "-J",
        ],
    )
    .output()
    .map_err(|e| format!("iperf3 -c: {e}"))?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("iperf3 -J output: {e}: {}", text(&out)))?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .ok_or_else(|| format!("iperf3 reported no result: {}", text(&out)))
}

/// The median RTT in ms of 100 pings 10 ms apart.
fn rtt(path: &Path) -> Result<f64, String> {
    let out = nsenter(
        &path.client,
        &[
            "ping",
            "-c",
            "100",
            "-i",
            "0.01",
            "-W",
            "1",
            &path.server_ip,
        ],
    )
    .output()
    .map_err(|e| format!("ping: {e}"))?;
    let mut rtts: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    if rtts.is_empty() {
        return Err(format!("ping answered nothing: {}", text(&out)));
    }
    Ok(median(&mut rtts))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Named namespaces the bench made: deleted on drop (devices go with them).
#[derive(Default)]
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: &str) -> Result<(), String> {
        run("ip", &["netns", "add", name])?;
        self.0.push(name.to_string());
        ip(name, "link set lo up")?;
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.0.iter().rev() {
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}

/// (a) Two namespaces joined by one veth.
fn bare_veth(nss: &mut Namespaces, tag: &str) -> Result<Path, String> {
    let (a, b) = (format!("pn-bo-{tag}-a"), format!("pn-bo-{tag}-b"));
    nss.add(&a)?;
    nss.add(&b)?;
    ip(
        &a,
        &format!("link add eth0 type veth peer name eth0 netns {b}"),
    )?;
    ip(&a, "addr add 10.251.0.1/24 dev eth0")?;
    ip(&b, "addr add 10.251.0.2/24 dev eth0")?;
    ip(&a, "link set eth0 up")?;
    ip(&b, "link set eth0 up")?;
    Ok(Path {
        client: format!("/run/netns/{a}"),
        server: format!("/run/netns/{b}"),
        server_ip: "10.251.0.2".into(),
    })
}

/// The lab's topology by hand: an underlay switch, two nodes, a cni0 bridge and one pod on
/// each node (pods on 10.250.<node>.0/24, MTU `pod_mtu`). The cross-node part is added by
/// the caller.
fn hand_topology(nss: &mut Namespaces, tag: &str, pod_mtu: u32) -> Result<[String; 2], String> {
    let sw = format!("pn-bo-{tag}-u");
    nss.add(&sw)?;
    ip(&sw, "link add br0 type bridge")?;
    ip(&sw, "link set br0 up")?;
    let mut nodes = [String::new(), String::new()];
    for n in 1..=2u32 {
        let node = format!("pn-bo-{tag}-n{n}");
        let pod = format!("pn-bo-{tag}-p{n}");
        nss.add(&node)?;
        nss.add(&pod)?;
        ip(
            &sw,
            &format!("link add bo{tag}{n} type veth peer name eth0 netns {node}"),
        )?;
        ip(&sw, &format!("link set bo{tag}{n} master br0 up"))?;
        ip(&node, &format!("addr add {HAND_UNDERLAY}.1{n}/24 dev eth0"))?;
        ip(&node, "link set eth0 up")?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &node,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        ip(&node, &format!("link add cni0 mtu {pod_mtu} type bridge"))?;
        ip(&node, &format!("addr add 10.250.{n}.1/24 dev cni0"))?;
        ip(&node, "link set cni0 up")?;
        ip(
            &node,
            &format!("link add veth{n} mtu {pod_mtu} type veth peer name eth0 netns {pod}"),
        )?;
        ip(&node, &format!("link set veth{n} master cni0 up"))?;
        ip(&pod, &format!("link set eth0 mtu {pod_mtu}"))?;
        ip(&pod, &format!("addr add 10.250.{n}.2/24 dev eth0"))?;
        ip(&pod, "link set eth0 up")?;
        ip(&pod, &format!("route add default via 10.250.{n}.1"))?;
        nodes[n as usize - 1] = node;
    }
    Ok(nodes)
}

fn hand_path(tag: &str) -> Path {
    Path {
        client: format!("/run/netns/pn-bo-{tag}-p1"),
        server: format!("/run/netns/pn-bo-{tag}-p2"),
        server_ip: "10.250.2.2".into(),
    }
}

/// (b) Kernel vxlan by hand, flannel's layout: a VTEP per node with the .0 of its pod
/// subnet, and per peer a neighbour, an FDB entry and an on-link route.
fn hand_vxlan(nss: &mut Namespaces) -> Result<Path, String> {
    let nodes = hand_topology(nss, "x", 1450)?;
    let mut macs = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let n = i + 1;
        ip(
            node,
            &format!(
                "link add vx0 mtu 1450 type vxlan id 42 local {HAND_UNDERLAY}.1{n} dev eth0 dstport 8472 nolearning"
            ),
        )?;
        ip(node, &format!("addr add 10.250.{n}.0/32 dev vx0"))?;
        ip(node, "link set vx0 up")?;
        let show = ip(node, "-o link show dev vx0")?;
        let mac = show
            .split("link/ether ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .ok_or_else(|| format!("no MAC on vx0: {show}"))?
            .to_string();
        macs.push(mac);
    }
    for (i, node) in nodes.iter().enumerate() {
        let (m, mac) = (2 - i, &macs[1 - i]);
        ip(
            node,
            &format!("neigh replace 10.250.{m}.0 lladdr {mac} dev vx0 nud permanent"),
        )?;
        run(
            "bridge",
            &[
                "-n",
                node,
                "fdb",
                "replace",
                mac,
                "dev",
                "vx0",
                "dst",
                &format!("{HAND_UNDERLAY}.1{m}"),
                "self",
                "permanent",
            ],
        )?;
        ip(
            node,
            &format!("route add 10.250.{m}.0/24 via 10.250.{m}.0 dev vx0 onlink"),
        )?;
    }
    Ok(hand_path("x"))
}

/// (c) Plain routes by hand: each pod subnet via the other node's underlay address.
fn hand_routed(nss: &mut Namespaces) -> Result<Path, String> {
    let nodes = hand_topology(nss, "r", 1500)?;
    for (i, node) in nodes.iter().enumerate() {
        let m = 2 - i;
        ip(
            node,
            &format!("route add 10.250.{m}.0/24 via {HAND_UNDERLAY}.1{m}"),
        )?;
    }
    Ok(hand_path("r"))
}

/// A podnet lab, taken down on drop.
struct Lab(String);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(PODNET)
            .args(["lab", "down", "--name", &self.0])
            .output();
    }
}

/// A 2-node lab with `backend` and a pod on each node; the path between the pods.
fn podnet_lab(backend: &str, name: &str, underlay: &str) -> Result<(Lab, Path), String> {
    let lab = Lab(name.to_string());
    run(
        PODNET,
        &[
            "lab",
            "up",
            "--name",
            name,
            "--nodes",
            "2",
            "--backend",
            backend,
            "--underlay-cidr",
            underlay,
            "--timeout",
            "30",
        ],
    )?;
    let kubeconfig = format!("/var/lib/podnet/{name}/kubeconfig");
    let mut manifest = String::new();
    for n in 1..=2 {
        manifest.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: bench{n}}}\nspec:\n  nodeName: {name}-node{n}\n  containers:\n  - name: c\n    image: podnet\n    command: [\"sleep\", \"3600\"]\n"
        ));
    }
    let mut child = Command::new(PODNET)
        .args(["--kubeconfig", &kubeconfig, "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("podnet apply: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(manifest.as_bytes())
            .map_err(|e| format!("podnet apply: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("podnet apply: {e}"))?;
    if !out.status.success() {
        return Err(format!("podnet apply: {}", text(&out)));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found: Vec<Option<(String, String)>> = (1..=2)
            .map(|n| pod_netns_ip(name, &format!("{name}-node{n}"), &format!("bench{n}")))
            .collect();
        if let [Some(a), Some(b)] = found.as_slice() {
            let path = Path {
                client: a.0.clone(),
                server: b.0.clone(),
                server_ip: b.1.clone(),
            };
            return Ok((lab, path));
        }
        if Instant::now() > deadline {
            return Err(format!("the pods of lab {name} did not start within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A running pod's network namespace and IP, from its node's pod record.
fn pod_netns_ip(lab: &str, node: &str, pod: &str) -> Option<(String, String)> {
    let dir = format!("/run/podnet/{lab}/nodes/{node}/pods");
    for entry in std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()) {
        let Ok(t) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
        if v["name"] == pod
            && let (Some(ns), Some(ip)) = (v["netns"].as_str(), v["pod_ip"].as_str())
        {
            return Some((ns.to_string(), ip.to_string()));
        }
    }
    None
}

type Row = (String, Result<(f64, f64), String>);
/// Builds a hand-made path in namespaces it records.
type Builder = fn(&mut Namespaces) -> Result<Path, String>;

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("bench overlay: needs root (network namespaces); skipped");
        return;
    }
    let seconds = env_or("PODNET_BENCH_SECONDS", 10).max(1);
    let runs = env_or("PODNET_BENCH_RUNS", 3).max(1) as usize;
    let only: Option<Vec<String>> = std::env::var("PODNET_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let wanted = |b: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == b));
    println!(
        "bench overlay: single TCP stream pod to pod across 2 nodes (iperf3), {runs} run(s) of {seconds} s, median; ping RTT median of 100"
    );
    let tag = std::process::id() % 10_000;

    // Every path is built first and measured round-robin (one iperf3 run of each per round),
    // so that whatever else the machine does weighs on all of them alike.
    let mut nss = Namespaces::default();
    let mut labs: Vec<Lab> = Vec::new();
    let mut paths: Vec<(String, Result<Path, String>)> = Vec::new();
    let baselines: [(&str, Builder); 3] = [
        ("(a) bare veth", |n| bare_veth(n, "v")),
        ("(b) hand-built vxlan, MTU 1450", hand_vxlan),
        ("(c) hand-built routes, MTU 1500", hand_routed),
    ];
    for (label, build) in baselines {
        paths.push((label.to_string(), build(&mut nss)));
    }
    for (i, backend) in ["vxlan", "host-gw", "udp"].into_iter().enumerate() {
        if !wanted(backend) {
            continue;
        }
        let name = format!("bo{}{tag}", &backend[..1]);
        let path = podnet_lab(backend, &name, UNDERLAYS[i]).map(|(lab, path)| {
            labs.push(lab);
            path
        });
        paths.push((format!("podnet {backend}"), path));
    }
    let mut servers = Vec::new();
    for (label, path) in &mut paths {
        if let Ok(p) = path {
            match start_server(p) {
                Ok(s) => servers.push(s),
                Err(e) => *path = Err(format!("{label}: {e}")),
            }
        }
    }
    let mut rates: Vec<Result<Vec<f64>, String>> = paths
        .iter()
        .map(|(_, p)| p.as_ref().map(|_| Vec::new()).map_err(|e| e.clone()))
        .collect();
    for round in 1..=runs {
        for ((label, path), rate) in paths.iter().zip(&mut rates) {
            let (Ok(path), Ok(list)) = (path, rate.as_mut()) else {
                continue;
            };
            match throughput(path, seconds) {
                Ok(gbps) => {
                    println!("round {round}: {label}: {gbps:.2} Gbit/s");
                    list.push(gbps);
                }
                Err(e) => *rate = Err(e),
            }
        }
    }
    let rows: Vec<Row> = paths
        .iter()
        .zip(rates)
        .map(|((label, path), rate)| {
            let result = rate.and_then(|mut list| {
                let path = path.as_ref().map_err(|e| e.clone())?;
                Ok((median(&mut list), rtt(path)?))
            });
            print_row(label, &result);
            (label.clone(), result)
        })
        .collect();
    drop(servers);
    drop(labs);
    drop(nss);

    println!(
        "\n{:<34}{:>12}{:>14}{:>22}",
        "path", "Gbit/s", "RTT ms", "ratio"
    );
    let rate = |label: &str| {
        rows.iter()
            .find(|(l, _)| l.starts_with(label))
            .and_then(|(_, r)| r.as_ref().ok().map(|v| v.0))
    };
    for (label, result) in &rows {
        let ratio = match label.as_str() {
            "podnet vxlan" => ratio(rate("podnet vxlan"), rate("(b)"), "of (b)"),
            "podnet host-gw" => ratio(rate("podnet host-gw"), rate("(c)"), "of (c)"),
            "podnet udp" => ratio(rate("podnet udp"), rate("(b)"), "of (b)"),
            _ => String::new(),
        };
        match result {
            Ok((gbps, rtt)) => println!("{label:<34}{gbps:>12.2}{rtt:>14.3}{ratio:>22}"),
            Err(e) => println!("{label:<34}{:>12}{:>14}   {}", "-", "-", first_line(e)),
        }
    }
}

fn ratio(a: Option<f64>, b: Option<f64>, of: &str) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.0}% {of}", 100.0 * a / b),
        _ => String::new(),
    }
}

fn first_line(e: &str) -> &str {
    e.lines().next().unwrap_or("")
}

fn print_row(label: &str, result: &Result<(f64, f64), String>) {
    match result {
        Ok((gbps, rtt)) => println!("{label}: {gbps:.2} Gbit/s, ping RTT median {rtt:.3} ms"),
        Err(e) => println!("{label}: failed: {e}"),
    }
}
