//! The cluster DNS measured with dnsperf (Debian `dnsperf`) against podnet's server and,
//! in the same run with the same records as a zone file, Knot DNS (Debian `knot`), on
//! loopback: queries/s for internal A names, SRV names and NXDOMAIN (runs alternate
//! between the two servers; medians printed), latency p50/p99 at a fixed rate (dnsperf
//! -v, per query), the server's RSS with the cluster loaded, and how long a Service
//! change takes to show in answers when it comes through a real API server's watch.
//!
//! `cargo bench -p podnet-dns --bench dnsperf` (10,000 Services, 50,000 endpoints, 3 runs
//! of 5 s); `PODNET_BENCH_SERVICES`, `PODNET_BENCH_ENDPOINTS`, `PODNET_BENCH_SECONDS`,
//! `PODNET_BENCH_RUNS`, `PODNET_BENCH_CHANGES` to change them. Skipped without dnsperf
//! or knotd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use podnet_dns::{ReplyConfig, ServerConfig, Shared, ZoneConfig};
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The machine's load: the 1-minute load average and this run's CPU count.
fn load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "load average {} on {} CPUs",
        avg.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    )
}

struct Cluster {
    services: usize,
    endpoints_per: usize,
}

impl Cluster {
    fn ns(i: usize) -> String {
        format!("ns-{}", i % 100)
    }
    fn ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 100 + i as u32)
    }
    fn ep(i: usize, j: usize, per: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + 2 + (i * per + j) as u32)
    }

    /// The index filled as the watches would.
    fn load(&self, shared: &Shared) {
        shared.update(|idx| {
            for n in 0..100 {
                idx.apply_namespace(&serde_json::from_value(json!({"metadata": {"name": format!("ns-{n}")}})).unwrap());
            }
            for i in 0..self.services {
                let svc = json!({"metadata": {"namespace": Self::ns(i), "name": format!("svc-{i}")},
                    "spec": {"clusterIP": Self::ip(i).to_string(), "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}});
                idx.apply_service(&serde_json::from_value(svc).unwrap());
                let eps: Vec<_> = (0..self.endpoints_per)
                    .map(|j| json!({"addresses": [Self::ep(i, j, self.endpoints_per).to_string()]}))
                    .collect();
                let slice = json!({"metadata": {"namespace": Self::ns(i), "name": format!("svc-{i}-x"),
                    "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
                    "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]});
                idx.apply_slice(&serde_json::from_value(slice).unwrap());
            }
        });
        shared.set_synced(true);
    }

    /// The same records as a zone file for Knot.
    fn zone_file(&self) -> String {
        let mut z = String::from(
            "$ORIGIN cluster.local.\n$TTL 5\n@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n@ IN NS ns.dns\nns.dns IN A 10.96.0.10\ndns-version IN TXT \"1.1.0\"\n",
        );
        for i in 0..self.services {
            let ns = Self::ns(i);
            z.push_str(&format!("svc-{i}.{ns}.svc IN A {}\n", Self::ip(i)));
            z.push_str(&format!(
                "_http._tcp.svc-{i}.{ns}.svc IN SRV 0 100 80 svc-{i}.{ns}.svc\n"
            ));
            for j in 0..self.endpoints_per {
                let ip = Self::ep(i, j, self.endpoints_per);
                z.push_str(&format!(
                    "{}.svc-{i}.{ns}.svc IN A {ip}\n",
                    ip.to_string().replace('.', "-")
                ));
            }
        }
        z
    }

    fn query_file(&self, kind: &str) -> String {
        let mut q = String::new();
        for k in 0..self.services.min(20_000) {
            let i = (k * 7919) % self.services;
            let ns = Self::ns(i);
            match kind {
                "A" => q.push_str(&format!("svc-{i}.{ns}.svc.cluster.local A\n")),
                "SRV" => q.push_str(&format!("_http._tcp.svc-{i}.{ns}.svc.cluster.local SRV\n")),
                _ => q.push_str(&format!("nosuch-{i}.{ns}.svc.cluster.local A\n")),
            }
        }
        q
    }
}

struct Knot {
    child: Child,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_knot(dir: &std::path::Path, port: u16, zone: &str) -> Knot {
    std::fs::write(dir.join("cluster.local.zone"), zone).unwrap();
    let conf = format!(
        "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\n    udp-workers: 2\n    tcp-workers: 1\n    background-workers: 1\ndatabase:\n    storage: {d}\nlog:\n  - target: stderr\n    any: error\ntemplate:\n  - id: default\n    storage: {d}\n    semantic-checks: off\nzone:\n  - domain: cluster.local\n    file: cluster.local.zone\n",
        d = dir.display()
    );
    std::fs::write(dir.join("knot.conf"), conf).unwrap();
    let child = Command::new("knotd")
        .arg("-c")
        .arg(dir.join("knot.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start knotd");
    Knot { child }
}

/// One query, its answer's RCODE and answer count; None on timeout.
fn ask(sock: &UdpSocket, to: SocketAddr, name: &str, qtype: RecordType) -> Option<(u8, usize)> {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).ok()?, qtype));
    sock.send_to(&m.to_vec().ok()?, to).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    let r = Message::from_vec(&buf[..n]).ok()?;
    Some((u16::from(r.metadata.response_code) as u8, r.answers.len()))
}

fn wait_answering(to: SocketAddr, name: &str) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ask(&sock, to, name, RecordType::A).is_some_and(|(_, n)| n > 0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{to} does not answer {name}");
}

/// dnsperf's queries/s and average latency (ms).
fn dnsperf(port: u16, file: &std::path::Path, seconds: usize) -> (f64, f64) {
    let out = Command::new("dnsperf")
        .args(["-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .arg(file)
        .args([
            "-l",
            &seconds.to_string(),
            "-c",
            "8",
            "-q",
            "256",
            "-T",
            "1",
        ])
        .output()
        .expect("run dnsperf");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> f64 {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))
            .and_then(|l| l.split(':').nth(1)?.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let lost = text
        .lines()
        .find(|l| l.contains("Queries lost"))
        .unwrap_or("")
        .trim()
        .to_string();
    if !lost.contains(" 0 (") {
        eprintln!("  dnsperf on port {port}: {lost}");
    }
    (
        field("Queries per second"),
        field("Average Latency (s)") * 1000.0,
    )
}

/// Per-query latencies (ms) at a fixed rate, from dnsperf -v: p50, p99.
fn latency(port: u16, file: &std::path::Path, qps: usize) -> (f64, f64) {
    let out = Command::new("dnsperf")
        .args(["-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .arg(file)
        .args(["-l", "3", "-Q", &qps.to_string(), "-c", "4", "-v"])
        .output()
        .expect("run dnsperf -v");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| {
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    (p(0.5), p(0.99))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Service changes through a real apiserver's watch: create → answered, per change (ms).
fn change_latency(rt: &tokio::runtime::Runtime, changes: usize) -> (f64, f64) {
    use podnet_apiserver::alloc::AllocatorConfig;
    use podnet_apiserver::controllers::ControllerConfig;
    use podnet_apiserver::server::{ApiServer, Config, StoreConfig};
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        store: StoreConfig::Embedded,
        allocators: AllocatorConfig {
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            nodeport_range: 30000..=32767,
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            node_cidr_size: 24,
            lb_pool: None,
        },
        controllers: ControllerConfig {
            node_monitor_grace: Duration::from_secs(40),
            ..ControllerConfig::default()
        },
        bookmark_interval: Duration::from_secs(1),
        tls: Default::default(),
        extra_listeners: Vec::new(),
        versions: Default::default(),
    };
    rt.block_on(async move {
        let server = ApiServer::start(config).await.expect("apiserver");
        let client = kube::Client::try_from(kube::Config::new(
            format!("http://{}", server.local_addr()).parse().unwrap(),
        ))
        .unwrap();
        let shared = Arc::new(Shared::new(
            ZoneConfig::new("cluster.local", 5).unwrap(),
            ReplyConfig::default(),
            None,
        ));
        let bound = podnet_dns::bind(&ServerConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            udp_workers: 1,
            health: None,
        })
        .unwrap();
        let addr = bound.addrs()[0];
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let feed = tokio::spawn(podnet_dns::watch::run(
            client.clone(),
            shared.clone(),
            false,
            stop.clone(),
        ));
        let serve = tokio::spawn(bound.serve(shared.clone(), stop));
        while !shared.synced() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let api: kube::Api<k8s_openapi::api::core::v1::Service> =
            kube::Api::namespaced(client, "default");
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut took = Vec::new();
        for i in 0..changes {
            let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
                "metadata": {"name": format!("chg-{i}")}, "spec": {"ports": [{"port": 80}]}}))
            .unwrap();
            // The clock starts before the write, as the change latency counts it.
            let created = Instant::now();
            api.create(&Default::default(), &svc).await.expect("create");
            let name = format!("chg-{i}.default.svc.cluster.local.");
            let sock = sock.try_clone().unwrap();
            let ms = tokio::task::spawn_blocking(move || {
                loop {
                    if ask(&sock, addr, &name, RecordType::A).is_some_and(|(_, n)| n > 0) {
                        return created.elapsed().as_secs_f64() * 1000.0;
                    }
                    if created.elapsed() > Duration::from_secs(5) {
                        return f64::INFINITY;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
            .await
            .unwrap();
            took.push(ms);
        }
        let _ = stop_tx.send(true);
        let _ = feed.await;
        let _ = serve.await;
        server.stop().await;
        took.sort_by(|a, b| a.total_cmp(b));
        let p = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
        (p(0.5), p(0.99))
    })
}

fn main() {
    if !have("dnsperf") || !have("knotd") {
        println!("dnsperf: skipped (needs Debian's dnsperf and knot)");
        return;
    }
    let cluster = Cluster {
        services: env("PODNET_BENCH_SERVICES", 10_000),
        endpoints_per: env("PODNET_BENCH_ENDPOINTS", 50_000)
            / env("PODNET_BENCH_SERVICES", 10_000).max(1),
    };
    let seconds = env("PODNET_BENCH_SECONDS", 5);
    let runs = env("PODNET_BENCH_RUNS", 3);
    println!(
        "dnsperf: {} Services, {} endpoints; {runs} runs of {seconds} s per server and name kind, alternating; {}",
        cluster.services,
        cluster.services * cluster.endpoints_per,
        load()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let me = std::process::id();
    let rss_before = rss_kib(me);
    let shared = Arc::new(Shared::new(
        ZoneConfig::new("cluster.local", 5).unwrap(),
        ReplyConfig::default(),
        None,
    ));
    let t = Instant::now();
    cluster.load(&shared);
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let bound = podnet_dns::bind(&ServerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        udp_workers: 2,
        health: None,
    })
    .unwrap();
    let ours = bound.addrs()[0];
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let serving = rt.spawn(bound.serve(shared.clone(), stop));
    wait_answering(ours, "svc-0.ns-0.svc.cluster.local.");

    let dir = tempfile::tempdir().unwrap();
    let knot_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let knot = start_knot(dir.path(), knot_port, &cluster.zone_file());
    let knot_addr: SocketAddr = format!("127.0.0.1:{knot_port}").parse().unwrap();
    wait_answering(knot_addr, "svc-0.ns-0.svc.cluster.local.");

    let servers = [("podnet", ours.port()), ("knot", knot_port)];
    for kind in ["A", "SRV", "NXDOMAIN"] {
        let file = dir.path().join(format!("queries-{kind}"));
        std::fs::write(&file, cluster.query_file(kind)).unwrap();
        let mut qps = [Vec::new(), Vec::new()];
        let mut avg = [Vec::new(), Vec::new()];
        for run in 0..runs {
            // Alternate which goes first.
            for k in 0..2 {
                let s = (k + run) % 2;
                let (q, l) = dnsperf(servers[s].1, &file, seconds);
                qps[s].push(q);
                avg[s].push(l);
            }
        }
        let (p50o, p99o) = latency(servers[0].1, &file, 20_000);
        let (p50k, p99k) = latency(servers[1].1, &file, 20_000);
        let (qo, qk) = (median(qps[0].clone()), median(qps[1].clone()));
        println!(
            "  {kind:<8}  podnet {qo:>9.0} q/s (runs {:?}), avg {:.3} ms, at 20k q/s p50 {p50o:.3} ms p99 {p99o:.3} ms",
            qps[0].iter().map(|q| q.round() as u64).collect::<Vec<_>>(),
            median(avg[0].clone())
        );
        println!(
            "  {:<8}  knot   {qk:>9.0} q/s (runs {:?}), avg {:.3} ms, at 20k q/s p50 {p50k:.3} ms p99 {p99k:.3} ms  -> podnet/knot {:.2}",
            "",
            qps[1].iter().map(|q| q.round() as u64).collect::<Vec<_>>(),
            median(avg[1].clone()),
            qo / qk
        );
    }
    let rss = rss_kib(me);
    println!(
        "  memory: podnet process RSS {:.1} MiB with the cluster loaded ({:.1} MiB over the empty process; index built in {load_ms:.0} ms); knotd RSS {:.1} MiB",
        rss as f64 / 1024.0,
        (rss.saturating_sub(rss_before)) as f64 / 1024.0,
        rss_kib(knot.child.id()) as f64 / 1024.0
    );
    drop(knot);
    let _ = stop_tx.send(true);
    let _ = rt.block_on(serving);
    let changes = env("PODNET_BENCH_CHANGES", 100);
    let (c50, c99) = change_latency(&rt, changes);
    println!(
        "  change: {changes} Services created through a real apiserver, answered after p50 {c50:.1} ms, p99 {c99:.1} ms (watch + index)"
    );
    println!("  after: {}", load());
}
