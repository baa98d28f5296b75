//! `podnet lab demo`: the article's ways of talking, each checked live on
//! real namespaces, veths, a bridge and processes. Paths whose parts are not
//! built yet are reported as not available, never faked.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use podnet_agent::runtime::Sandbox;
use podnet_agent::runtime::cni::{AttachmentRef, CniNetwork};
use podnet_api::cni::NetConfList;
use podnet_kernel::{NetNs, Netlink, route};

const SUBNET: &str = "10.244.1.0/24";

struct Paths {
    state: PathBuf,
    run: PathBuf,
}

impl Paths {
    fn new(lab: &str) -> Paths {
        Paths {
            state: PathBuf::from("/var/lib/podnet").join(lab),
            run: PathBuf::from("/run/podnet").join(lab),
        }
    }
    fn conflist(&self) -> PathBuf {
        self.state.join("node1/cni/net.d/10-podnet.conflist")
    }
    fn pids(&self) -> PathBuf {
        self.run.join("demo.pids")
    }
}

/// The demo's pod: its sandbox, its address and its container processes.
struct Pod {
    name: String,
    sandbox: Sandbox,
    ip: Option<Ipv4Addr>,
    containers: Vec<Child>,
}

struct Demo {
    lab: String,
    paths: Paths,
    exe: PathBuf,
    node: NetNs,
    network: CniNetwork,
    pods: Vec<Pod>,
}

pub fn run(lab: &str, keep: bool) -> Result<()> {
    let exe = std::env::current_exe().context("find the podnet binary")?;
    let paths = Paths::new(lab);
    let node_name = format!("{lab}-node1");
    if NetNs::list_named()?.contains(&node_name) {
        bail!(
            "a lab called {lab} is already up (namespace {node_name}): run `podnet lab down --name {lab}` first"
        );
    }
    println!(
        "podnet lab demo: a node ({node_name}) with pods on a bridge; every check below is live.\n"
    );
    let node = NetNs::create(&node_name)?;
    let mut demo = Demo::new(lab, paths, exe, node)?;
    let outcome = demo.show();
    if keep && outcome.is_ok() {
        demo.record_pids()?;
        println!("\nThe lab is left up (--keep). Look around:");
        println!("  ip netns list");
        println!("  ip -n {node_name} route; ip -n {node_name} link show master cni0");
        println!("  podnet lab down --name {lab}");
        return Ok(());
    }
    demo.teardown();
    outcome
}

impl Demo {
    fn new(lab: &str, paths: Paths, exe: PathBuf, node: NetNs) -> Result<Demo> {
        fs::create_dir_all(&paths.run)?;
        let conflist = conflist_json(&paths);
        let file = paths.conflist();
        fs::create_dir_all(file.parent().context("conflist dir")?)?;
        fs::write(&file, &conflist)?;
        let list = NetConfList::parse(conflist.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let bin_dir = exe.parent().context("binary dir")?.to_path_buf();
        let network = CniNetwork {
            list,
            bin_dirs: vec![bin_dir],
            host_ns: Some(node.try_clone()?),
        };
        Ok(Demo {
            lab: lab.to_string(),
            paths,
            exe,
            node,
            network,
            pods: Vec::new(),
        })
    }

    fn show(&mut self) -> Result<()> {
        self.containers_of_one_pod()?;
        self.pods_on_one_node()?;
        println!(
            "\n3. Pod to pod across nodes: not available yet (needs the overlay: vxlan, host-gw or udp)."
        );
        println!(
            "4. Pod to Service (ClusterIP): not available yet (needs the control plane and the service proxy)."
        );
        self.print_node_tables()
    }

    fn containers_of_one_pod(&mut self) -> Result<()> {
        println!(
            "1. Containers of one pod share localhost (the sandbox holds the pod's namespaces)"
        );
        let pod = self.start_pod("pod-a")?;
        let server = self.start_container(pod, &["probe", "serve", "--tcp", "127.0.0.1:8080"])?;
        self.pods[pod].containers.push(server);
        let reply = self.exec_in_pod(
            pod,
            &[
                "probe",
                "send",
                "--tcp",
                "127.0.0.1:8080",
                "--data",
                "hello from container 2",
            ],
        )?;
        println!(
            "   container 2 -> 127.0.0.1:8080 sent \"hello from container 2\", received \"{reply}\""
        );
        Ok(())
    }

    fn pods_on_one_node(&mut self) -> Result<()> {
        println!("\n2. Pods on one node talk over the bridge cni0 ({SUBNET}, wired by podnet-cni)");
        let a = 0;
        self.attach(a)?;
        let b = self.start_pod("pod-b")?;
        self.attach(b)?;
        let server = self.start_container(b, &["probe", "serve", "--tcp", "0.0.0.0:8080"])?;
        self.pods[b].containers.push(server);
        let server = self.start_container(a, &["probe", "serve", "--tcp", "0.0.0.0:9090"])?;
        self.pods[a].containers.push(server);
        let (ip_a, ip_b) = (self.pod_ip(a)?, self.pod_ip(b)?);
        println!("   pod-a is {ip_a}, pod-b is {ip_b}");
        let target = format!("{ip_b}:8080");
        let reply = self.exec_in_pod(
            a,
            &[
                "probe",
                "send",
                "--tcp",
                &target,
                "--data",
                "hello from pod-a",
            ],
        )?;
        println!("   pod-a -> {target} sent \"hello from pod-a\", received \"{reply}\"");
        for (ip, port, pod) in [(ip_a, 9090, "pod-a"), (ip_b, 8080, "pod-b")] {
            let target = format!("{ip}:{port}");
            let reply = self.exec_in_node(&[
                "probe",
                "send",
                "--tcp",
                &target,
                "--data",
                "hello from the node",
            ])?;
            println!(
                "   node -> {pod} {target} sent \"hello from the node\", received \"{reply}\""
            );
        }
        Ok(())
    }

    fn start_pod(&mut self, name: &str) -> Result<usize> {
        let ns_name = format!("{}-node1-{name}", self.lab);
        let sandbox = Sandbox::start(&self.exe, &ns_name, name)?;
        self.pods.push(Pod {
            name: name.to_string(),
            sandbox,
            ip: None,
            containers: Vec::new(),
        });
        Ok(self.pods.len() - 1)
    }

    fn attach(&mut self, pod: usize) -> Result<()> {
        let netns = self.pods[pod].sandbox.netns_path();
        let id = self.pods[pod].sandbox.name().to_string();
        let result = self.network.add(&AttachmentRef {
            container_id: &id,
            netns: &netns,
            ifname: "eth0",
        })?;
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .context("podnet-cni returned no IPv4 address")?;
        self.pods[pod].ip = Some(ip);
        Ok(())
    }

    fn pod_ip(&self, pod: usize) -> Result<Ipv4Addr> {
        self.pods[pod].ip.context("pod has no address")
    }

    fn start_container(&self, pod: usize, args: &[&str]) -> Result<Child> {
        let mut child = self.pods[pod]
            .sandbox
            .command(&self.exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        wait_serving(&mut child)?;
        Ok(child)
    }

    fn exec_in_pod(&self, pod: usize, args: &[&str]) -> Result<String> {
        let out = self.pods[pod]
            .sandbox
            .command(&self.exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()?;
        output_text(out, &self.pods[pod].name)
    }

    fn exec_in_node(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        self.node.enter_on_exec(&mut cmd)?;
        output_text(cmd.spawn()?.wait_with_output()?, "the node")
    }

    fn print_node_tables(&self) -> Result<()> {
        let mut nl = Netlink::open_in(&self.node)?;
        let links = nl.links()?;
        let name_of = |i: Option<u32>| {
            links
                .iter()
                .find(|l| Some(l.index) == i)
                .map(|l| l.name.clone())
                .unwrap_or_default()
        };
        println!("\nRoute table of {}-node1 (route -n):", self.lab);
        println!(
            "   {:<16}{:<16}{:<16}{:<6}Iface",
            "Destination", "Gateway", "Genmask", "Flags"
        );
        for r in nl.routes(route::MAIN_TABLE)? {
            let gw = r.gateway.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let flags = if r.gateway.is_some() { "UG" } else { "U" };
            println!(
                "   {:<16}{:<16}{:<16}{:<6}{}",
                r.dst.network(),
                gw,
                r.dst.netmask(),
                flags,
                name_of(r.oif)
            );
        }
        if let Some(bridge) = links.iter().find(|l| l.name == "cni0") {
            let addrs = nl.addresses(Some(bridge.index))?;
            let ports: Vec<&str> = links
                .iter()
                .filter(|l| l.master == Some(bridge.index))
                .map(|l| l.name.as_str())
                .collect();
            let addr = addrs
                .iter()
                .find(|(_, a)| a.addr().is_ipv4())
                .map(|(_, a)| a.to_string())
                .unwrap_or_default();
            println!("\nBridge cni0 ({addr}), ports: {}", ports.join(" "));
        }
        Ok(())
    }

    fn record_pids(&self) -> Result<()> {
        let mut pids = Vec::new();
        for pod in &self.pods {
            pids.push(pod.sandbox.pid().to_string());
            pids.extend(pod.containers.iter().map(|c| c.id().to_string()));
        }
        fs::write(self.paths.pids(), pids.join("\n"))?;
        Ok(())
    }

    fn teardown(mut self) {
        for mut pod in std::mem::take(&mut self.pods) {
            for c in &mut pod.containers {
                let _ = podnet_agent::runtime::exec::stop(c, Duration::from_secs(2));
            }
            if pod.ip.is_some() {
                let netns = pod.sandbox.netns_path();
                let id = pod.sandbox.name().to_string();
                let _ = self.network.del(
                    &AttachmentRef {
                        container_id: &id,
                        netns: &netns,
                        ifname: "eth0",
                    },
                    None,
                );
            }
            let _ = pod.sandbox.stop(Duration::from_secs(2));
        }
        remove_lab(&self.lab, &self.paths);
    }
}

fn conflist_json(paths: &Paths) -> String {
    let data_dir = paths.state.join("node1/ipam");
    serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "podnet",
        "plugins": [{
            "type": "podnet-cni",
            "bridge": "cni0",
            "isDefaultGateway": true,
            "hairpinMode": true,
            "ipam": { "type": "podnet-cni", "subnet": SUBNET, "dataDir": data_dir },
        }],
    })
    .to_string()
}

fn wait_serving(child: &mut Child) -> Result<()> {
    let out = child.stdout.take().context("container stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    if line.trim() != "serving" {
        let _ = child.kill();
        bail!("the server container did not start: {line}");
    }
    Ok(())
}

fn output_text(out: std::process::Output, who: &str) -> Result<String> {
    if !out.status.success() {
        bail!(
            "probe in {who} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `podnet lab down`: stops the demo's processes and removes its namespaces
/// and files.
pub fn down(lab: &str) -> Result<()> {
    let paths = Paths::new(lab);
    if let Ok(text) = fs::read_to_string(paths.pids()) {
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            stop_if_ours(pid);
        }
    }
    remove_lab(lab, &paths);
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

fn remove_lab(lab: &str, paths: &Paths) {
    let prefix = format!("{lab}-node");
    for name in NetNs::list_named().unwrap_or_default() {
        if name.starts_with(&prefix) {
            let _ = NetNs::delete(&name);
        }
    }
    for dir in [&paths.state, &paths.run] {
        let _ = remove_dir(dir);
        // The shared parents go too once no lab is left in them.
        if let Some(parent) = dir.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
