//! `podnet lab demo`: brings up a real 2-node lab (`podnet lab up --nodes 2`),
//! creates pods and a Service through the API, and checks the article's ways
//! of talking live, from inside a pod. Paths whose parts are not built yet are
//! reported as not available, never faked. Every probe runs inside a pod:
//! nothing is sent to lab addresses from the root namespace.
//!
//! When a step fails, the demo shows what the lab knows about why (the last
//! warnings and errors of each agent, the Node conditions that are off) before
//! it removes the lab — or leaves it up with `--keep`, which keeps the lab
//! whatever happens.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use podnet_kernel::nftnl::{Family, Verdict};
use podnet_kernel::ruleset::{self, Action, Addr, Datum, ElementValue, Match, Rule, Table};
use podnet_kernel::{NetNs, Netlink, route};
use serde_json::{Value, json};

use crate::cli::GlobalArgs;
use crate::cli::client::Client;
use crate::cli::layout::{NodeDirs, PodRecord};
use crate::lab::state::LabState;
use crate::lab::{Backend, LabPaths, ProxyMode, UpArgs, validate_name};

const NODES: u32 = 2;
const NAMESPACE: &str = "default";
const PORT: u16 = 8080;
const SERVICE_PORT: u16 = 80;
/// How long the pods get to be Running and Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Set by SIGINT, SIGTERM or SIGHUP: the demo stops at its next step and
/// removes the lab instead of dying with it half made.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn catch_interrupts() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; handlers are reset to the default in the
        // processes the demo starts (exec).
        unsafe { sigaction(signal, &action) }.with_context(|| format!("catch {signal}"))?;
    }
    Ok(())
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: stopping the demo");
    }
    Ok(())
}

/// Tears the lab down when dropped, unless disarmed (`--keep`).
struct Teardown {
    lab: String,
    armed: bool,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        println!("\nCleaning up (podnet lab down --name {}):", self.lab);
        if let Err(e) = crate::lab::down::run(&self.lab) {
            eprintln!("podnet: removing lab {}: {e:#}", self.lab);
        }
    }
}

/// A pod of the demo as the API and its node's runtime see it.
struct DemoPod {
    name: String,
    node: String,
    ip: Ipv4Addr,
    sandbox_pid: i32,
    /// The pod's veth on its node's bridge, from the CNI result the runtime
    /// recorded.
    host_veth: Option<String>,
}

pub fn run(
    lab: &str,
    keep: bool,
    backend: Option<Backend>,
    proxy_mode: Option<ProxyMode>,
) -> Result<()> {
    validate_name(lab)?;
    let paths = LabPaths::new(lab);
    // Only a lab the demo builds is the demo's to remove: anything of a lab
    // of that name already here is left alone.
    if !crate::lab::status::observe(&paths)?.is_absent() {
        bail!(
            "a lab called {lab} is already here: run `podnet lab down --name {lab}` first, or give the demo another --name"
        );
    }
    let exe = std::env::current_exe().context("find the podnet binary")?;
    println!(
        "podnet lab demo: a {NODES}-node lab ({lab}) with pods made through the API; every check below is live.\n"
    );
    catch_interrupts()?;
    let _guard = Teardown {
        lab: lab.to_string(),
        armed: !keep,
    };
    let result = crate::lab::up::run_for_demo(UpArgs {
        name: lab.to_string(),
        nodes: Some(NODES),
        backend,
        proxy_mode,
        store: None,
        underlay_cidr: None,
        cluster_cidr: None,
        service_cidr: None,
        node_cidr_size: None,
        mtu: None,
        ip_masq: None,
        vxlan_direct_routing: false,
        timeout: 60,
        dns: Default::default(),
    })
    .and_then(|()| check_interrupted())
    .and_then(|()| show(&paths, &exe));
    if let Err(e) = result {
        explain_failure(&paths, keep);
        return Err(e);
    }
    if keep {
        let kubeconfig = paths.kubeconfig();
        println!("\nThe lab is left up (--keep). Look around:");
        println!("  export KUBECONFIG={}", kubeconfig.display());
        println!("  podnet get pods -o wide; podnet get svc web");
        println!(
            "  podnet trace default/pod-a svc/default/web:{SERVICE_PORT} (--live: a real probe, traced)"
        );
        println!("  podnet ui    # the live picture: open http://127.0.0.1:7480/");
        println!(
            "  podnet exec pod-a -c client -- {} probe send --tcp <pod-c IP>:{PORT} --data hi",
            exe.display()
        );
        println!(
            "  ip -n {} route; ip -n {} link show master cni0",
            paths.node_name(1),
            paths.node_name(1)
        );
        println!("  podnet lab down --name {lab}");
    }
    Ok(())
}

/// After a failed step: what the agents and Nodes say, and whether the lab stays.
fn explain_failure(paths: &LabPaths, keep: bool) {
    if !paths.lab_json().exists() {
        // Refused before anything was made (preflight): nothing to show or keep.
        return;
    }
    if !INTERRUPTED.load(Ordering::SeqCst) {
        println!("\nA step failed (the error is at the end). What the lab says:");
        print!("{}", crate::lab::diagnose::report(paths));
    }
    if keep {
        println!(
            "\nThe lab is left up for inspection (--keep):\n  export KUBECONFIG={}\n  podnet get nodes; podnet describe node {}\n  podnet lab status --name {}\n  podnet lab down --name {}",
            paths.kubeconfig().display(),
            paths.node_name(1),
            paths.name,
            paths.name
        );
    }
}

fn show(paths: &LabPaths, exe: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start an async runtime for the API client")?;
    let global = GlobalArgs {
        kubeconfig: Some(paths.kubeconfig()),
        lab: Some(paths.name.clone()),
        ..GlobalArgs::default()
    };
    let client = runtime
        .block_on(Client::connect(&global))
        .map_err(|e| anyhow!("{e}"))?;
    let (node1, node2) = (paths.node_name(1), paths.node_name(2));
    let objects = manifests(exe, &node1, &node2);
    println!(
        "\nCreating through the API (kubeconfig {}):",
        paths.kubeconfig().display()
    );
    for (path, object) in &objects {
        check_interrupted()?;
        runtime
            .block_on(client.post(path, object))
            .map_err(|e| anyhow!("create {}: {e}", describe(object)))?;
        println!("   created {}", describe(object));
    }
    print!("Waiting for the pods to be Running and Ready… ");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let started = Instant::now();
    let pods = match wait_ready(&runtime, &client, paths, &["pod-a", "pod-b", "pod-c"]) {
        Ok(p) => p,
        Err(e) => {
            println!("failed");
            return Err(e);
        }
    };
    println!("done in {:.1}s", started.elapsed().as_secs_f64());
    for p in &pods {
        println!("   {} on {} is {}", p.name, p.node, p.ip);
    }
    let [a, b, c] = [&pods[0], &pods[1], &pods[2]];
    check_interrupted()?;

    println!("\n1. Containers of one pod share localhost (the sandbox holds the pod's namespaces)");
    let data = "hello from container client";
    let target = format!("127.0.0.1:{PORT}");
    let reply = send_from(exe, a, &target, data, 3)?;
    println!("   pod-a/client -> {target} sent \"{data}\", received \"{reply}\"");

    println!("\n2. Pods on one node talk over the bridge cni0 ({node1})");
    let data = "hello from pod-a";
    let target = format!("{}:{PORT}", b.ip);
    let reply = send_from(exe, a, &target, data, 3)?;
    println!("   pod-a -> pod-b {target} sent \"{data}\", received \"{reply}\"");

    println!("\n3. Pods on different nodes talk across the underlay ({node1} -> {node2})");
    let target = format!("{}:{PORT}", c.ip);
    let reply = send_from(exe, a, &target, data, 3)?;
    println!("   pod-a -> pod-c {target} sent \"{data}\", received \"{reply}\"");

    let service = runtime
        .block_on(client.get(&format!("/api/v1/namespaces/{NAMESPACE}/services/web")))
        .map_err(|e| anyhow!("read service web: {e}"))?;
    let cluster_ip = service["spec"]["clusterIP"]
        .as_str()
        .unwrap_or("")
        .to_string();
    println!(
        "\n4. Pod to Service web (ClusterIP {cluster_ip}:{SERVICE_PORT} -> pod-c on {node2}), through {node1}'s service proxy"
    );
    if cluster_ip.parse::<Ipv4Addr>().is_ok() {
        let target = format!("{cluster_ip}:{SERVICE_PORT}");
        let data = "hello, web";
        let reply = send_from(exe, a, &target, data, 3)?;
        println!("   pod-a -> {target} sent \"{data}\", received \"{reply}\"");
        print_service_rules(paths, &node1, &cluster_ip)?;
    }

    check_interrupted()?;
    print_by_name(exe, paths, a)?;

    check_interrupted()?;
    for node in [&node1, &node2] {
        print_node_tables(paths, node, &pods)?;
    }
    if cluster_ip.parse::<Ipv4Addr>().is_ok() {
        print_trace(exe, paths)?;
    }
    Ok(())
}

/// Step 5: pod-a reaches the Service as `web`, resolved by the cluster DNS (the
/// kube-dns Service in front of the `podnet dns` pods) through the resolv.conf the
/// runtime gave the pod. The DNS pods may still be starting: asked again for a while.
fn print_by_name(exe: &Path, paths: &LabPaths, a: &DemoPod) -> Result<()> {
    let Some(state) = crate::lab::state::LabState::load(paths)? else {
        return Ok(());
    };
    if !state.dns.enabled() {
        return Ok(());
    }
    println!(
        "\n5. Pod to Service by name: web, answered by the cluster DNS ({}/{} {}, domain {})",
        crate::lab::dns::NAMESPACE,
        crate::lab::dns::SERVICE,
        state.dns.cluster_dns,
        state.dns.cluster_domain
    );
    let resolv = in_pod(exe, a, &["cat", "/etc/resolv.conf"])?;
    println!(
        "   pod-a's /etc/resolv.conf: {}",
        resolv.lines().collect::<Vec<_>>().join(" | ")
    );
    let target = format!("web:{SERVICE_PORT}");
    let data = "hello, web by name";
    let deadline = Instant::now() + Duration::from_secs(20);
    let reply = loop {
        match send_from(exe, a, &target, data, 3) {
            Ok(r) => break r,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    println!("   pod-a -> {target} sent \"{data}\", received \"{reply}\"");
    Ok(())
}

/// Runs a command in `pod` and returns its output.
fn in_pod(exe: &Path, pod: &DemoPod, command: &[&str]) -> Result<String> {
    let out = Command::new(exe)
        .args([
            "sandbox",
            "exec",
            "--pid",
            &pod.sandbox_pid.to_string(),
            "--",
        ])
        .args(command)
        .stdin(Stdio::null())
        .output()
        .context("run podnet sandbox exec")?;
    if !out.status.success() {
        bail!(
            "{} in {} failed: {}",
            command.join(" "),
            pod.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Step 4's path hop by hop, as `podnet trace` explains it from the nodes' kernel state.
fn print_trace(exe: &Path, paths: &LabPaths) -> Result<()> {
    let args = [
        "trace",
        "default/pod-a",
        &format!("svc/default/web:{SERVICE_PORT}"),
    ];
    println!("\nStep 4's path, hop by hop (podnet {}):", args.join(" "));
    let out = Command::new(exe)
        .arg("--kubeconfig")
        .arg(paths.kubeconfig())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run podnet trace")?;
    if !out.status.success() {
        bail!(
            "podnet trace failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("   {line}");
    }
    Ok(())
}

/// The demo's objects: where to POST them and what.
fn manifests(exe: &Path, node1: &str, node2: &str) -> Vec<(String, Value)> {
    let exe = exe.display().to_string();
    let listen = format!("0.0.0.0:{PORT}");
    let server = json!({
        "name": "server",
        "image": "podnet/probe",
        "command": [exe, "probe", "serve", "--tcp", listen],
        "readinessProbe": { "tcpSocket": { "port": PORT }, "periodSeconds": 1 },
    });
    let pod = |name: &str, app: &str, node: &str, containers: Vec<Value>| {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": name, "namespace": NAMESPACE, "labels": { "app": app } },
            "spec": { "nodeName": node, "containers": containers },
        })
    };
    let client = json!({
        "name": "client",
        "image": "podnet/probe",
        "command": ["/bin/sleep", "3600"],
    });
    let pods = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    vec![
        (
            pods.clone(),
            pod("pod-a", "client", node1, vec![server.clone(), client]),
        ),
        (
            pods.clone(),
            // Not behind web: the Service's only pod is on the other node.
            pod("pod-b", "local", node1, vec![server.clone()]),
        ),
        (pods, pod("pod-c", "web", node2, vec![server])),
        (
            format!("/api/v1/namespaces/{NAMESPACE}/services"),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": { "name": "web", "namespace": NAMESPACE },
                "spec": {
                    "selector": { "app": "web" },
                    "ports": [{ "port": SERVICE_PORT, "targetPort": PORT, "protocol": "TCP" }],
                },
            }),
        ),
    ]
}

fn describe(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("object");
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    match object["spec"]["nodeName"].as_str() {
        Some(node) => format!("{kind} {name} on {node}"),
        None => format!("{kind} {name}"),
    }
}

/// Waits until every pod is Running and Ready with an IP and a sandbox.
fn wait_ready(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    paths: &LabPaths,
    names: &[&str],
) -> Result<Vec<DemoPod>> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        for name in names {
            let pod = runtime
                .block_on(client.get(&format!("/api/v1/namespaces/{NAMESPACE}/pods/{name}")))
                .map_err(|e| anyhow!("read pod {name}: {e}"))?;
            match ready_pod(paths, name, &pod) {
                Ok(p) => ready.push(p),
                Err(why) => waiting.push(format!("{name}: {why}")),
            }
        }
        if waiting.is_empty() {
            return Ok(ready);
        }
        check_interrupted()?;
        if Instant::now() >= deadline {
            bail!(
                "the pods are not Running and Ready after {}s: {}",
                READY_TIMEOUT.as_secs(),
                waiting.join("; ")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ready_pod(paths: &LabPaths, name: &str, pod: &Value) -> Result<DemoPod, String> {
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    if phase != "Running" {
        return Err(match why_not_ready(pod) {
            Some(why) => format!("phase {phase} ({why})"),
            None => format!("phase {phase}"),
        });
    }
    let ready = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if !ready {
        return Err(match why_not_ready(pod) {
            Some(why) => format!("not Ready ({why})"),
            None => "not Ready".into(),
        });
    }
    let ip: Ipv4Addr = pod["status"]["podIP"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("no podIP")?;
    let node = pod["spec"]["nodeName"].as_str().ok_or("no nodeName")?;
    let uid = pod["metadata"]["uid"].as_str().ok_or("no uid")?;
    let file = NodeDirs::lab(&paths.name, node).pod_state_file(uid);
    let text = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let record: PodRecord =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let raw: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let host_veth = raw["cni_result"]["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i.get("sandbox").is_none())
        .filter_map(|i| i["name"].as_str())
        .find(|n| *n != "cni0")
        .map(str::to_string);
    Ok(DemoPod {
        name: name.to_string(),
        node: node.to_string(),
        ip,
        sandbox_pid: record.sandbox_pid,
        host_veth,
    })
}

/// What the pod's status says about why it is not Ready: a waiting
/// container's reason and message, else a false condition's message.
fn why_not_ready(pod: &Value) -> Option<String> {
    let status = &pod["status"];
    let waiting = status["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|c| {
            let w = &c["state"]["waiting"];
            let reason = w["reason"].as_str()?;
            let name = c["name"].as_str().unwrap_or("?");
            Some(match w["message"].as_str() {
                Some(m) if !m.is_empty() => format!("container {name} {reason}: {m}"),
                _ => format!("container {name} {reason}"),
            })
        });
    waiting.or_else(|| {
        status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["status"] == "False")
            .find_map(|c| {
                let text = c["message"].as_str().or(c["reason"].as_str())?;
                Some(format!("{}: {text}", c["type"].as_str().unwrap_or("?")))
            })
    })
}

/// Runs `podnet probe send` inside `pod` (as `podnet exec` does: `podnet
/// sandbox exec --pid <sandbox>`) and returns the reply.
fn send_from(exe: &Path, pod: &DemoPod, target: &str, data: &str, timeout: u64) -> Result<String> {
    let out = Command::new(exe)
        .args([
            "sandbox",
            "exec",
            "--pid",
            &pod.sandbox_pid.to_string(),
            "--",
        ])
        .arg(exe)
        .args(["probe", "send", "--tcp", target, "--data", data])
        .args(["--timeout", &timeout.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("run podnet sandbox exec")?;
    if !out.status.success() {
        bail!(
            "probe in {} failed: {}",
            pod.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The rules in `node` that sent pod-a's connection to web's pod: in nftables
/// mode the dispatch element of the ClusterIP and the service's chain (the
/// DNAT to the pod); in userspace mode the KUBE-PORTALS lines that redirect
/// the ClusterIP to the proxy's local port. Read back from the node's kernel over
/// netlink (no `nft` program) and printed in nft's syntax; the proxy spreads its
/// services over several tables.
fn print_service_rules(paths: &LabPaths, node: &str, cluster_ip: &str) -> Result<()> {
    let mode = LabState::load(paths)?
        .map(|s| s.proxy_mode)
        .unwrap_or(ProxyMode::Nftables);
    let ns = NetNs::open(node)?;
    let tables = ruleset::list(Some(&ns), Some(Family::Ip), |name| {
        name.starts_with("podnet-")
    })
    .with_context(|| format!("read the nftables ruleset of {node} over netlink"))?;
    println!(
        "   the rules that did it, in {node} (read over netlink, in nft's syntax; proxy mode {}):",
        mode.as_str()
    );
    let ip: Ipv4Addr = cluster_ip
        .parse()
        .with_context(|| format!("ClusterIP {cluster_ip}"))?;
    let lines = match mode {
        ProxyMode::Nftables => nftables_service_lines(&tables, ip),
        ProxyMode::Userspace => userspace_portal_lines(&tables, ip),
    };
    if lines.is_empty() {
        println!("     (none found for {cluster_ip}: the proxy has not synced)");
    }
    for line in lines {
        println!("     {line}");
    }
    Ok(())
}

/// The dispatch map element of the ClusterIP, then the chain it goes to and the endpoint
/// maps that chain picks from, in the same table.
fn nftables_service_lines(tables: &[Table], cluster_ip: Ipv4Addr) -> Vec<String> {
    let key = [
        Datum::Ip(cluster_ip),
        Datum::Proto(6),
        Datum::Port(SERVICE_PORT),
    ];
    let found = tables.iter().find_map(|t| {
        let map = t.set(podnet_proxy::model::SERVICE_IPS)?;
        let element = map.elements.iter().find(|e| e.key == key)?;
        Some((t, element))
    });
    let Some((table, element)) = found else {
        return Vec::new();
    };
    let mut out = vec![format!(
        "table ip {}, dispatch map element: {element}",
        table.name
    )];
    let Some(ElementValue::Verdict(Verdict::Goto(chain) | Verdict::Jump(chain))) = &element.value
    else {
        return out;
    };
    let Some(chain) = table.chain(chain) else {
        return out;
    };
    out.extend(block(
        &format!("chain {} {{", chain.name),
        chain.rules.iter(),
    ));
    for map in chain.rules.iter().flat_map(|r| &r.actions) {
        if let Action::DnatRandomMap { map, .. } = map
            && let Some(set) = table.set(map)
        {
            let text = Table {
                sets: vec![set.clone()],
                ..Table::new(Family::Ip, "")
            }
            .to_string();
            // The map's block without the table around it.
            out.extend(text.lines().skip(1).take_while(|l| *l != "}").map(|l| {
                let l = l.strip_prefix('\t').unwrap_or(l);
                match l.strip_prefix('\t') {
                    Some(inner) => format!("  {inner}"),
                    None => l.to_string(),
                }
            }));
        }
    }
    out
}

/// A block of lines: its header, its items indented by two, its closing brace.
fn block<T: std::fmt::Display>(header: &str, items: impl Iterator<Item = T>) -> Vec<String> {
    let mut out = vec![header.to_string()];
    out.extend(items.map(|i| format!("  {i}")));
    out.push("}".to_string());
    out
}

/// A node's routes, `ip route`-like and explained (the article's tables: the other nodes'
/// pod subnets to the overlay, the node's own subnet to cni0), and its bridge's ports, from
/// netlink in the node's namespace.
fn print_node_tables(paths: &LabPaths, node: &str, pods: &[DemoPod]) -> Result<()> {
    let state = LabState::load(paths)?;
    let cluster = state.as_ref().map(|s| s.cluster_cidr);
    let backend = state.as_ref().map(|s| s.backend.as_str()).unwrap_or("?");
    let ns = NetNs::open(node)?;
    let mut nl = Netlink::open_in(&ns)?;
    let links = nl.links()?;
    let link_of = |i: Option<u32>| links.iter().find(|l| Some(l.index) == i);
    println!("\nRoute table of {node} (ip route, read through netlink; backend {backend}):");
    for r in nl.routes(route::MAIN_TABLE)? {
        let link = link_of(r.oif);
        let dev = link.map(|l| l.name.as_str()).unwrap_or("?");
        let mut line = r.dst.to_string();
        if let Some(gw) = r.gateway {
            line.push_str(&format!(" via {gw}"));
        }
        line.push_str(&format!(" dev {dev}"));
        line.push_str(match r.protocol {
            route::PROTO_PODNET => " proto podnet",
            2 => " proto kernel",
            _ => "",
        });
        if r.onlink {
            line.push_str(" onlink");
        }
        if let Some(src) = r.prefsrc {
            line.push_str(&format!(" src {src}"));
        }
        let in_cluster = cluster.is_some_and(|c| c.contains(&r.dst));
        let why = if dev == "cni0" {
            "this node's pods, on its bridge".to_string()
        } else if Some(r.dst) == cluster {
            format!("the whole pod range, into the overlay device {dev}")
        } else if in_cluster {
            match link.and_then(|l| l.kind.as_deref()) {
                Some(kind) => format!("another node's pods, through the {kind} device {dev}"),
                None => format!("another node's pods, routed to that node over {dev}"),
            }
        } else {
            "the underlay".to_string()
        };
        println!("   {line:<60} # {why}");
    }
    match links.iter().find(|l| l.name == "cni0") {
        Some(bridge) => {
            let addrs = nl.addresses(Some(bridge.index))?;
            let ports: Vec<String> = links
                .iter()
                .filter(|l| l.master == Some(bridge.index))
                .map(|l| {
                    match pods
                        .iter()
                        .find(|p| p.host_veth.as_deref() == Some(l.name.as_str()))
                    {
                        Some(p) => format!("{} ({})", l.name, p.name),
                        None => l.name.clone(),
                    }
                })
                .collect();
            let addr = addrs
                .iter()
                .find(|(_, a)| a.addr().is_ipv4())
                .map(|(_, a)| a.to_string())
                .unwrap_or_default();
            println!("Bridge cni0 of {node} ({addr}), ports: {}", ports.join(" "));
        }
        None => println!("Bridge cni0 of {node}: none"),
    }
    Ok(())
}

/// `podnet lab down` on what an older single-node demo (`lab demo --keep`
/// before the demo ran on a real lab) left: its recorded processes, its
/// namespaces and its files.
pub fn down(lab: &str) -> Result<()> {
    let paths = LabPaths::new(lab);
    if let Ok(text) = fs::read_to_string(paths.demo_pids()) {
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            stop_if_ours(pid);
        }
    }
    let prefix = format!("{lab}-node");
    for name in NetNs::list_named().unwrap_or_default() {
        if name.starts_with(&prefix) {
            let _ = NetNs::delete(&name);
        }
    }
    for dir in [&paths.lib, &paths.run] {
        let _ = remove_dir(dir);
        // The shared parents go too once no lab is left in them.
        if let Some(parent) = dir.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
    println!("lab {lab} is down");
    Ok(())
}

/// Stops `pid` only if it is still one of our podnet processes.
fn stop_if_ours(pid: i32) {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    if exe.file_name().is_some_and(|n| n == "podnet") {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn remove_dir(dir: &PathBuf) -> std::io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The rules of the KUBE-PORTALS-* chains that name the ClusterIP.
fn userspace_portal_lines(tables: &[Table], cluster_ip: Ipv4Addr) -> Vec<String> {
    let names_ip = |r: &Rule| {
        r.matches.iter().any(|m| {
            matches!(m, Match::Ip { addr: Addr::Daddr, net, equal: true } if net.addr() == cluster_ip && net.prefix_len() == 32)
        })
    };
    tables
        .iter()
        .flat_map(|t| &t.chains)
        .filter(|c| c.name.starts_with("KUBE-PORTALS"))
        .flat_map(|c| {
            c.rules
                .iter()
                .filter(|r| names_ip(r))
                .map(move |r| format!("{}: {r}", c.name))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use podnet_kernel::ruleset::{Chain, DataType, Set, SetData, SetElement};

    /// A shard table as the proxy writes it, as [`ruleset::list`] reads it back.
    fn shard() -> Table {
        let chain = "service-X-default/web/tcp/";
        let map = "endpoints-X-default/web/tcp/";
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mut dispatch = Set::new(
            "service-ips",
            vec![
                DataType::Ipv4Addr,
                DataType::InetProto,
                DataType::InetService,
            ],
        );
        dispatch.value = SetData::Verdict;
        dispatch.elements = vec![SetElement {
            key: vec![Datum::Ip(ip("10.96.0.9")), Datum::Proto(6), Datum::Port(80)],
            value: Some(ElementValue::Verdict(Verdict::Goto(chain.into()))),
        }];
        let mut endpoints = Set::new(map, vec![DataType::Integer]);
        endpoints.value = SetData::Data(vec![DataType::Ipv4Addr, DataType::InetService]);
        endpoints.typeof_text = Some("numgen random mod 1 : ip daddr . tcp dport".into());
        endpoints.elements = vec![SetElement {
            key: vec![Datum::Int(0)],
            value: Some(ElementValue::Data(vec![
                Datum::Ip(ip("10.244.1.2")),
                Datum::Port(8080),
            ])),
        }];
        let rules = vec![
            Rule::new(
                vec![
                    Match::Ip {
                        addr: Addr::Daddr,
                        net: "10.96.0.9/32".parse().unwrap(),
                        equal: true,
                    },
                    Match::Port {
                        proto: Some(6),
                        dport: true,
                        first: 80,
                        last: 80,
                    },
                    Match::Ip {
                        addr: Addr::Saddr,
                        net: "10.244.0.0/16".parse().unwrap(),
                        equal: false,
                    },
                ],
                vec![Action::Verdict(Verdict::Jump("mark-for-masquerade".into()))],
            ),
            Rule::new(
                vec![Match::L4Proto(6)],
                vec![Action::DnatRandomMap {
                    count: 1,
                    offset: 0,
                    map: map.into(),
                }],
            ),
        ];
        let mut t = Table::new(Family::Ip, "podnet-proxy-4");
        t.sets = vec![dispatch, endpoints];
        t.chains = vec![Chain {
            name: chain.into(),
            hook: None,
            rules,
        }];
        t
    }

    #[test]
    fn the_service_lines_show_the_element_the_chain_and_its_endpoint_map() {
        assert_eq!(
            nftables_service_lines(&[shard()], "10.96.0.9".parse().unwrap()),
            vec![
                "table ip podnet-proxy-4, dispatch map element: 10.96.0.9 . tcp . 80 : goto service-X-default/web/tcp/",
                "chain service-X-default/web/tcp/ {",
                "  ip daddr 10.96.0.9 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                "  meta l4proto tcp dnat ip to numgen random mod 1 map @endpoints-X-default/web/tcp/",
                "}",
                "map endpoints-X-default/web/tcp/ {",
                "  typeof numgen random mod 1 : ip daddr . tcp dport",
                "  elements = { 0 : 10.244.1.2 . 8080 }",
                "}",
            ]
        );
    }
}
