//! The udp backend's throughput and latency next to a hand-built kernel vxlan path with
//! the same pod MTU, in one run: two nodes with one pod each, built in namespaces of the
//! benchmark's own (deleted at the end, also on failure). A single TCP stream, iperf3
//! (Debian's `iperf3`), pod to pod across the nodes, median of `PODNET_BENCH_RUNS` runs
//! (3) of `PODNET_BENCH_SECONDS` seconds (10); then the median of 100 pings 10 ms apart.
//! Runs as root: `cargo bench -p podnet-overlay --bench udp`.

#[path = "../tests/common_udp/mod.rs"]
mod common_udp;

use std::net::Ipv4Addr;
use std::time::Duration;

use common_udp::{Lab, Node, POD_MTU, Proc, UNDERLAY_MTU, exec_in};
use podnet_overlay::Backend;
use podnet_overlay::udp::UdpBackend;

/// vxlan's 50 bytes of encapsulation on top of the same pod MTU.
const VXLAN_UNDERLAY_MTU: u32 = POD_MTU + 50;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench udp: needs root (namespaces, devices); skipped");
        return;
    }
    if std::process::Command::new("iperf3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("bench udp: iperf3 is missing: apt-get install -y iperf3");
        std::process::exit(1);
    }
    let seconds = env_or("PODNET_BENCH_SECONDS", 10).max(1);
    let runs = env_or("PODNET_BENCH_RUNS", 3).max(1) as usize;
    println!(
        "bench udp: single TCP stream pod to pod across 2 nodes, pod MTU {POD_MTU}, {runs} run(s) of {seconds} s, median"
    );

    let only_udp = std::env::var("PODNET_BENCH_ONLY").is_ok_and(|v| v == "udp");
    let (vx_gbps, vx_rtt) = if only_udp {
        (f64::NAN, f64::NAN)
    } else {
        let lab = Lab::with_underlay_mtu("bvx", 2, POD_MTU, VXLAN_UNDERLAY_MTU);
        hand_built_vxlan(&lab);
        measure(&lab, seconds, runs)
    };
    println!(
        "(b) kernel vxlan, hand-built (underlay MTU {VXLAN_UNDERLAY_MTU}): {vx_gbps:.2} Gbit/s, ping RTT median {vx_rtt:.3} ms"
    );

    let lab = Lab::new("budp", 2, POD_MTU);
    let mut backends: Vec<UdpBackend> = lab
        .nodes
        .iter()
        .map(|n| UdpBackend::new(n.udp_config()).expect("udp backend"))
        .collect();
    for (i, backend) in backends.iter_mut().enumerate() {
        backend.ensure_device().expect("ensure_device");
        backend.sync_peers(&lab.peers_of(i)).expect("sync_peers");
    }
    let before = forwarder_cpu();
    let (udp_gbps, udp_rtt) = measure(&lab, seconds, runs);
    let after = forwarder_cpu();
    println!(
        "(u) podnet udp backend (underlay MTU {UNDERLAY_MTU}): {udp_gbps:.2} Gbit/s, ping RTT median {udp_rtt:.3} ms"
    );
    println!(
        "u/b = {:.1}% (target >= 30%)",
        100.0 * udp_gbps / vx_gbps.max(f64::MIN_POSITIVE)
    );
    for (name, (user, sys)) in &after {
        let (u0, s0) = before.get(name).copied().unwrap_or_default();
        println!(
            "  {name} threads (both nodes): user {:.1} s, system {:.1} s over the runs and pings",
            user - u0,
            sys - s0
        );
    }
    for (i, b) in backends.iter().enumerate() {
        println!("node {} counters: {:?}", i + 1, b.counters());
    }
    drop(backends);
}

/// A kernel vxlan path between the two nodes, as flannel's vxlan backend builds it:
/// a device with learning off, and per peer a neighbour, an FDB entry and an onlink route.
fn hand_built_vxlan(lab: &Lab) {
    for node in &lab.nodes {
        let i = node.subnet.network().octets()[2];
        let ns = &node.ns.name;
        let public = node.public_ip.to_string();
        let mac = format!("02:00:00:00:00:{i:02x}");
        let vtep = format!("10.244.{i}.0/32");
        let mtu = POD_MTU.to_string();
        run(
            ns,
            &[
                "ip",
                "link",
                "add",
                "vxbench",
                "address",
                &mac,
                "type",
                "vxlan",
                "id",
                "42",
                "dstport",
                "4789",
                "local",
                &public,
                "dev",
                "eth0",
                "nolearning",
            ],
        );
        run(ns, &["ip", "link", "set", "vxbench", "mtu", &mtu, "up"]);
        run(ns, &["ip", "addr", "add", &vtep, "dev", "vxbench"]);
        for peer in lab.nodes.iter().filter(|p| p.name != node.name) {
            let j = peer.subnet.network().octets()[2];
            let peer_mac = format!("02:00:00:00:00:{j:02x}");
            let gw = format!("10.244.{j}.0");
            run(
                ns,
                &[
                    "ip", "neigh", "add", &gw, "lladdr", &peer_mac, "dev", "vxbench",
                ],
            );
            run(
                ns,
                &[
                    "bridge",
                    "fdb",
                    "append",
                    &peer_mac,
                    "dev",
                    "vxbench",
                    "dst",
                    &peer.public_ip.to_string(),
                ],
            );
            run(
                ns,
                &[
                    "ip",
                    "route",
                    "add",
                    &peer.subnet.to_string(),
                    "via",
                    &gw,
                    "dev",
                    "vxbench",
                    "onlink",
                ],
            );
        }
    }
}

fn run(ns: &str, args: &[&str]) {
    let out = exec_in(ns, args);
    assert!(
        out.status.success(),
        "{args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Median Gbit/s of `runs` iperf3 runs from pod 1 to pod 2, and the median ping RTT (ms).
fn measure(lab: &Lab, seconds: u64, runs: usize) -> (f64, f64) {
    let (a, b) = (&lab.nodes[0], &lab.nodes[1]);
    let server_ip = b.pod_ip.to_string();
    let _server = Proc::spawn(&b.pod.name, &["iperf3", "-s", "-B", &server_ip]);
    wait_for_server(a, b.pod_ip);
    let mut rates: Vec<f64> = (0..runs).map(|_| iperf3(a, &server_ip, seconds)).collect();
    let rtt = ping_median(a, b.pod_ip);
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], rtt)
}

fn wait_for_server(client: &Node, server: Ipv4Addr) {
    for _ in 0..50 {
        let ok = client.pod.run(|| {
            std::net::TcpStream::connect_timeout(&(server, 5201).into(), Duration::from_millis(200))
                .is_ok()
        });
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("iperf3 server on {server} did not come up");
}

fn iperf3(client: &Node, server: &str, seconds: u64) -> f64 {
    let secs = seconds.to_string();
    let out = exec_in(
        &client.pod.name,
        &["iperf3", "-c", server, "-t", &secs, "-J"],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 output: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no throughput in iperf3's report: {json}"));
    let gbps = bps / 1e9;
    println!("  run: {gbps:.2} Gbit/s");
    gbps
}

fn ping_median(client: &Node, to: Ipv4Addr) -> f64 {
    let out = exec_in(
        &client.pod.name,
        &[
            "ping",
            "-c",
            "100",
            "-i",
            "0.01",
            "-W",
            "1",
            &to.to_string(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut times: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!times.is_empty(), "no ping replies: {text}");
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// CPU seconds (user, system) of this process's forwarder threads, by thread name.
fn forwarder_cpu() -> std::collections::BTreeMap<String, (f64, f64)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": utime and stime are fields 14 and 15.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map(|(_, n)| n).unwrap_or("");
        if !name.starts_with("podnet-udp") {
            continue;
        }
        let fields: Vec<&str> = tail.split_whitespace().collect();
        let (Some(user), Some(sys)) = (fields.get(11), fields.get(12)) else {
            continue;
        };
        let entry = out.entry(name.to_string()).or_insert((0.0, 0.0));
        entry.0 += user.parse::<f64>().unwrap_or(0.0) / ticks;
        entry.1 += sys.parse::<f64>().unwrap_or(0.0) / ticks;
    }
    out
}
