//! `podnet lab up`: builds the lab (underlay, nodes, store, apiserver,
//! agents), shows progress, and waits until every Node is Ready with its
//! network available (`NetworkUnavailable=False`: its agent programmed the
//! overlay, masquerade and service proxy). On an existing lab it starts again
//! the agents that exited (as re-running `up` should) and waits the same way;
//! a lab missing anything else is reported as in the way. A node whose
//! network stays unavailable fails `up` with its condition's message and the
//! last warnings of its agent, not only after the timeout.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use ipnet::{IpNet, Ipv4Net};
use podnet_apiserver::alloc::AllocatorConfig;
use podnet_kernel::NetNs;

use super::api::Api;
use super::diagnose;
use super::processes::{self, Started, is_alive, log_tail, spawn_daemon};
use super::state::{ApiserverState, LabState, NodeState, ProcessRecord, Processes, UnderlayState};
use super::status::{self, ApiNode, Observation};
use super::topology::{self, Underlay};
use super::{
    AGENT_API_PORT, Backend, LabPaths, MAX_NODES, NetworkOptions, ProxyMode, StoreKind,
    UNDERLAY_BRIDGE, UpArgs, http, validate_name,
};

const DEFAULT_NODES: u32 = 2;
const DEFAULT_UNDERLAY: &str = "172.30.0.0/24";
const DEFAULT_CLUSTER: &str = "10.244.0.0/16";
const DEFAULT_SERVICE: &str = "10.96.0.0/12";
const DEFAULT_NODE_CIDR_SIZE: u8 = 24;
/// The apiserver's `--lb-pool`: LoadBalancer Services get their ingress IP from it (TEST-NET-1,
/// outside every lab range; a client reaches it through any node, as through a router that
/// announces the pool).
const LB_POOL: &str = "192.0.2.0/28";
/// Where Debian's etcd-server installs etcd.
const ETCD_BIN: &str = "/usr/bin/etcd";
const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(30);
const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node may report `NetworkUnavailable=True` before `up` gives up on it (sooner
/// when `--timeout` runs out first): the agent reports it only after repeated failures, but
/// a part that was just mended gets its next retry — the service proxy retries a refused
/// sync at most 30 s later — before `up` calls it broken.
const NETWORK_GRACE: Duration = Duration::from_secs(30);

/// The lab asked for, with defaults filled in and checked.
#[derive(Debug, Clone)]
struct Plan {
    nodes: u32,
    backend: Backend,
    proxy_mode: ProxyMode,
    store: StoreKind,
    underlay: Underlay,
    cluster_cidr: Ipv4Net,
    service_cidr: Ipv4Net,
    node_cidr_size: u8,
    network: NetworkOptions,
    dns: super::dns::DnsOptions,
    ready_timeout: Duration,
}

/// The agents' network settings `lab up` was asked for, checked as the agent checks them.
fn network_options(args: &UpArgs, backend: Backend) -> Result<NetworkOptions> {
    if let Some(mtu) = args.mtu
        && !(576..=65535).contains(&mtu)
    {
        bail!("--mtu {mtu}: an IPv4 pod MTU is 576 to 65535");
    }
    if args.vxlan_direct_routing && backend != Backend::Vxlan {
        bail!(
            "--vxlan-direct-routing is a setting of the vxlan backend, not of {}: drop it or use --backend vxlan",
            backend.as_str()
        );
    }
    Ok(NetworkOptions {
        mtu: args.mtu,
        ip_masq: args.ip_masq.unwrap_or(true),
        vxlan_direct_routing: args.vxlan_direct_routing,
    })
}

fn parse_default(text: &str) -> Result<Ipv4Net> {
    text.parse()
        .with_context(|| format!("built-in default {text} is not a subnet"))
}

impl Plan {
    fn from_args(args: &UpArgs) -> Result<Plan> {
        let nodes = args.nodes.unwrap_or(DEFAULT_NODES);
        if nodes == 0 || nodes > MAX_NODES {
            bail!("--nodes {nodes}: a lab has 1 to {MAX_NODES} nodes");
        }
        let underlay_cidr = match args.underlay_cidr {
            Some(c) => c,
            None => parse_default(DEFAULT_UNDERLAY)?,
        };
        let cluster_cidr = match args.cluster_cidr {
            Some(c) => c.trunc(),
            None => parse_default(DEFAULT_CLUSTER)?,
        };
        let service_cidr = match args.service_cidr {
            Some(c) => c.trunc(),
            None => parse_default(DEFAULT_SERVICE)?,
        };
        let underlay = Underlay::new(underlay_cidr, nodes)?;
        let ranges = [
            ("--underlay-cidr", underlay.cidr),
            ("--cluster-cidr", cluster_cidr),
            ("--service-cidr", service_cidr),
        ];
        for (i, (a_flag, a)) in ranges.iter().enumerate() {
            for (b_flag, b) in &ranges[i + 1..] {
                if a.contains(b) || b.contains(a) {
                    bail!(
                        "{a_flag} {a} overlaps {b_flag} {b}: the underlay, pod and service ranges must be disjoint"
                    );
                }
            }
        }
        let node_cidr_size = args.node_cidr_size.unwrap_or(DEFAULT_NODE_CIDR_SIZE);
        check_node_subnets(cluster_cidr, service_cidr, node_cidr_size, nodes)?;
        if args.timeout == 0 {
            bail!("--timeout 0: give the nodes at least a second to become Ready");
        }
        let backend = args.backend.unwrap_or(Backend::Vxlan);
        let network = network_options(args, backend)?;
        let dns = super::dns::DnsOptions::from_args(&args.dns, service_cidr)?;
        Ok(Plan {
            nodes,
            network,
            dns,
            backend,
            proxy_mode: args.proxy_mode.unwrap_or(ProxyMode::Nftables),
            store: args.store.unwrap_or(StoreKind::Embedded),
            underlay,
            cluster_cidr,
            service_cidr,
            node_cidr_size,
            ready_timeout: Duration::from_secs(args.timeout),
        })
    }

    /// The plan of an existing lab grown to `nodes` nodes.
    fn of_state(state: &LabState, nodes: u32, timeout: u64) -> Result<Plan> {
        check_node_subnets(
            state.cluster_cidr,
            state.service_cidr,
            state.node_cidr_size,
            nodes,
        )?;
        Ok(Plan {
            nodes,
            backend: state.backend,
            proxy_mode: state.proxy_mode,
            store: if state.store.starts_with("etcd") {
                StoreKind::Etcd
            } else {
                StoreKind::Embedded
            },
            underlay: Underlay::new(state.underlay.cidr, nodes)?,
            cluster_cidr: state.cluster_cidr,
            service_cidr: state.service_cidr,
            node_cidr_size: state.node_cidr_size,
            network: state.network.clone(),
            dns: state.dns.clone(),
            ready_timeout: Duration::from_secs(timeout.max(1)),
        })
    }
}

/// Refuses, before anything is made, ranges the apiserver would refuse (with its own
/// message) and a cluster range with fewer node subnets than nodes.
fn check_node_subnets(
    cluster_cidr: Ipv4Net,
    service_cidr: Ipv4Net,
    node_cidr_size: u8,
    nodes: u32,
) -> Result<()> {
    let config = AllocatorConfig {
        cluster_cidr: IpNet::V4(cluster_cidr),
        service_cidr: IpNet::V4(service_cidr),
        node_cidr_size,
        ..AllocatorConfig::default()
    };
    config.validate().map_err(|e| anyhow!(e))?;
    let bits = u32::from(node_cidr_size - cluster_cidr.prefix_len());
    let subnets = 1u64 << bits;
    if subnets < u64::from(nodes) {
        bail!(
            "--cluster-cidr {cluster_cidr} holds {subnets} node subnets of /{node_cidr_size}, fewer than the {nodes} nodes asked for: pass a larger --cluster-cidr or a longer --node-cidr-size"
        );
    }
    Ok(())
}

/// `podnet lab up`: the lab, then how to use it.
pub fn run(args: UpArgs) -> Result<()> {
    up(args, true)
}

/// The lab `podnet lab demo` runs on: the same, without the hint on how to use it (the
/// demo says itself whether the lab stays).
pub fn run_for_demo(args: UpArgs) -> Result<()> {
    up(args, false)
}

fn up(args: UpArgs, hint: bool) -> Result<()> {
    validate_name(&args.name)?;
    let plan = Plan::from_args(&args)?;
    let paths = LabPaths::new(&args.name);
    let obs = status::observe(&paths)?;
    if !obs.is_absent() {
        return adopt(&obs, &args);
    }
    let exe = std::env::current_exe().context("find the podnet binary")?;
    let agent_flags = preflight(&exe, &plan)?;
    let started = Instant::now();
    println!(
        "podnet lab up: lab {} with {} node{} (backend {}, proxy {}, store {})",
        paths.name,
        plan.nodes,
        if plan.nodes == 1 { "" } else { "s" },
        plan.backend.as_str(),
        plan.proxy_mode.as_str(),
        plan.store.as_str()
    );
    let mut lab = Builder {
        paths: paths.clone(),
        plan,
        exe,
        agent_flags,
        processes: Processes::default(),
        api: None,
        restarted: HashMap::new(),
    };
    if let Err(e) = lab.build() {
        bail!(
            "{e:#}\nlab {0} did not come up; what was made is left for inspection (logs under {1}); remove it with `podnet lab down --name {0}`",
            paths.name,
            paths.logs().display()
        );
    }
    let took = started.elapsed().as_secs_f64();
    if !hint {
        println!("lab {} is up in {took:.1} s.", paths.name);
        return Ok(());
    }
    println!("lab {} is up in {took:.1} s. To use it:", paths.name);
    println!("  export KUBECONFIG={}", paths.kubeconfig().display());
    println!("  podnet get nodes");
    println!("  podnet lab status --name {}", paths.name);
    println!("  podnet lab down --name {}", paths.name);
    Ok(())
}

/// An existing lab: a complete one is adopted as it is (unless the flags ask
/// for something else), its exited agents started again, and waited for like
/// a new one; anything else is reported as in the way.
fn adopt(obs: &Observation, args: &UpArgs) -> Result<()> {
    let name = &obs.paths.name;
    let blocking = obs.problems_but_dead_agents();
    let Some(state) = obs.state.as_ref().filter(|_| blocking.is_empty()) else {
        let list: Vec<String> = obs.problems().iter().map(|p| format!("  - {p}")).collect();
        bail!(
            "lab {name} is partly there and cannot be adopted:\n{}\nremove it with `podnet lab down --name {name}`, then run `podnet lab up` again",
            list.join("\n")
        );
    };
    let mut differences = Vec::new();
    let mut grow_to = None;
    if let Some(n) = args.nodes
        && n as usize != state.nodes.len()
    {
        if n as usize > state.nodes.len() {
            grow_to = Some(n);
        } else {
            differences.push(format!(
                "--nodes {n} (it has {}; a lab grows but does not shrink)",
                state.nodes.len()
            ));
        }
    }
    if let Some(size) = args.node_cidr_size
        && size != state.node_cidr_size
    {
        differences.push(format!(
            "--node-cidr-size {size} (it uses {})",
            state.node_cidr_size
        ));
    }
    if let Some(b) = args.backend
        && b != state.backend
    {
        differences.push(format!(
            "--backend {} (it uses {})",
            b.as_str(),
            state.backend.as_str()
        ));
    }
    if let Some(m) = args.proxy_mode
        && m != state.proxy_mode
    {
        differences.push(format!(
            "--proxy-mode {} (it uses {})",
            m.as_str(),
            state.proxy_mode.as_str()
        ));
    }
    if let Some(mtu) = args.mtu
        && Some(mtu) != state.network.mtu
    {
        let has = state
            .network
            .mtu
            .map_or("the backend's default".to_string(), |m| m.to_string());
        differences.push(format!("--mtu {mtu} (it uses {has})"));
    }
    if let Some(masq) = args.ip_masq
        && masq != state.network.ip_masq
    {
        differences.push(format!(
            "--ip-masq {masq} (it uses {})",
            state.network.ip_masq
        ));
    }
    if args.vxlan_direct_routing && !state.network.vxlan_direct_routing {
        differences.push("--vxlan-direct-routing (it routes through the vxlan device)".into());
    }
    if let Some(s) = args.store
        && !state.store.starts_with(s.as_str())
    {
        differences.push(format!("--store {} (it uses {})", s.as_str(), state.store));
    }
    for (flag, asked, has) in [
        ("--underlay-cidr", args.underlay_cidr, state.underlay.cidr),
        ("--cluster-cidr", args.cluster_cidr, state.cluster_cidr),
        ("--service-cidr", args.service_cidr, state.service_cidr),
    ] {
        if let Some(c) = asked
            && c.trunc() != has
        {
            differences.push(format!("{flag} {c} (it uses {has})"));
        }
    }
    if !differences.is_empty() {
        bail!(
            "lab {name} is already up, differently from what you asked: {}; to rebuild it, run `podnet lab down --name {name}` first",
            differences.join(", ")
        );
    }
    let dead = obs.dead_agents();
    if let Some(n) = grow_to {
        return grow(&obs.paths, state.clone(), n, args.timeout, &dead);
    }
    if dead.is_empty() {
        println!("lab {name} is already up; adopting it as it is (nothing changed).");
    } else {
        println!("lab {name} is up, but not every agent runs; starting them again.");
    }
    let nodes = u32::try_from(state.nodes.len()).context("node count")?;
    let mut lab = Builder::for_lab(&obs.paths, state, nodes, args.timeout, !dead.is_empty())?;
    lab.restart_agents(state, &dead)?;
    lab.wait_nodes_ready(state)?;
    print!("{}", status::render(&status::observe(&obs.paths)?));
    println!(
        "  export KUBECONFIG={}",
        state.apiserver.kubeconfig.display()
    );
    Ok(())
}

/// Adds nodes to a healthy lab: their namespaces on the underlay, their agents, and waits
/// until they are Ready. The apiserver gives them pod subnets; the other agents see the new
/// Nodes and route to them.
fn grow(
    paths: &LabPaths,
    mut state: LabState,
    to: u32,
    timeout: u64,
    dead: &[&ProcessRecord],
) -> Result<()> {
    if to > MAX_NODES {
        bail!("--nodes {to}: a lab has 1 to {MAX_NODES} nodes");
    }
    let from = u32::try_from(state.nodes.len()).context("node count")?;
    let mut lab = Builder::for_lab(paths, &state, to, timeout, true)?;
    println!(
        "podnet lab up: lab {} grows from {from} to {to} nodes (backend {})",
        paths.name,
        lab.plan.backend.as_str()
    );
    lab.restart_agents(&state, dead)?;
    let underlay = lab.plan.underlay;
    let underlay_ns = NetNs::open(&paths.underlay_ns())?;
    for i in from + 1..=to {
        let name = paths.node_name(i);
        let node = NodeState {
            netns: name.clone(),
            node_ip: underlay.node_ip(i),
            state_dir: paths.node_state_dir(&name),
            log_dir: paths.node_log_dir(&name),
            name,
        };
        // Recorded before it is made, so that `lab down` finds it whatever happens next.
        state.nodes.push(node.clone());
        state.save(paths)?;
        let ns = step(
            &format!("node{i} ({}, {})", node.name, node.node_ip),
            || {
                Ok((
                    topology::create_node(paths, &underlay_ns, &underlay, i)?,
                    "ok".into(),
                ))
            },
        )?;
        lab.start_agent(&state, &node, &ns)?;
    }
    lab.wait_nodes_ready(&state)?;
    println!("lab {} has {to} nodes.", paths.name);
    Ok(())
}

/// What the agent binary accepts, beyond the flags every agent has.
#[derive(Debug, Clone, Default)]
struct AgentFlags {
    backend: bool,
    proxy_mode: bool,
    service_cidr: bool,
}

/// Checks, before anything is made, that this podnet has what the lab needs.
fn preflight(exe: &Path, plan: &Plan) -> Result<AgentFlags> {
    let etcd = (plan.store == StoreKind::Etcd).then_some(Path::new(ETCD_BIN));
    crate::preflight::lab(plan.backend.kind(), etcd)?;
    let help = |cmd: &str| -> Result<String> {
        let out = Command::new(exe)
            .args([cmd, "--help"])
            .output()
            .with_context(|| format!("run {} {cmd} --help", exe.display()))?;
        if !out.status.success() {
            bail!(
                "{} has no `{cmd}` command ({}); build a podnet that has it",
                exe.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let apiserver = help("apiserver")?;
    if !apiserver.contains("--listen-fd") {
        bail!(
            "`{} apiserver` cannot serve on an inherited socket (no --listen-fd), which the lab's agents reach it through; build a newer podnet",
            exe.display()
        );
    }
    let agent = help("agent")?;
    for flag in ["--node-name", "--kubeconfig", "--node-ip", "--state-dir"] {
        if !agent.contains(flag) {
            bail!(
                "`{} agent` does not take {flag}, which the lab passes; build a podnet whose agent matches this lab",
                exe.display()
            );
        }
    }
    let network = &plan.network;
    for (asked, flag) in [
        (network.mtu.is_some(), "--mtu"),
        (!network.ip_masq, "--ip-masq"),
        (network.vxlan_direct_routing, "--vxlan-direct-routing"),
    ] {
        if asked && !agent.contains(flag) {
            bail!(
                "`{} agent` does not take {flag}, which you asked the lab to pass; build a newer podnet",
                exe.display()
            );
        }
    }
    Ok(AgentFlags {
        backend: agent.contains("--backend"),
        proxy_mode: agent.contains("--proxy-mode"),
        service_cidr: agent.contains("--service-cidr"),
    })
}

struct Builder {
    paths: LabPaths,
    plan: Plan,
    exe: PathBuf,
    agent_flags: AgentFlags,
    processes: Processes,
    /// A client for the apiserver once it is ready.
    api: Option<Api>,
    /// Nodes whose agent this run started again, and when: their Node still shows what
    /// the old agent posted until the new one reports the network itself.
    restarted: HashMap<String, SystemTime>,
}

/// Prints `label… ` and then `ok`, what `f` returns, or `failed`.
fn step<T>(label: &str, f: impl FnOnce() -> Result<(T, String)>) -> Result<T> {
    print!("{label}… ");
    let _ = std::io::stdout().flush();
    match f() {
        Ok((value, done)) => {
            println!("{done}");
            Ok(value)
        }
        Err(e) => {
            println!("failed");
            Err(e)
        }
    }
}

impl Builder {
    /// A builder for the existing lab of `state`, planned at `nodes` nodes. The agent's
    /// flags are looked up (`podnet agent --help`) only when agents are to be started.
    fn for_lab(
        paths: &LabPaths,
        state: &LabState,
        nodes: u32,
        timeout: u64,
        starts_agents: bool,
    ) -> Result<Builder> {
        let plan = Plan::of_state(state, nodes, timeout)?;
        let exe = std::env::current_exe().context("find the podnet binary")?;
        let agent_flags = if starts_agents {
            preflight(&exe, &plan)?
        } else {
            AgentFlags::default()
        };
        Ok(Builder {
            paths: paths.clone(),
            plan,
            exe,
            agent_flags,
            processes: Processes::load(paths)?,
            api: Some(Api::connect(&state.apiserver.kubeconfig)?),
            restarted: HashMap::new(),
        })
    }

    /// Starts the agents of `dead` (recorded, no longer running) again, in their nodes'
    /// namespaces, replacing their records. The new agent adopts its Node and pods.
    fn restart_agents(&mut self, state: &LabState, dead: &[&ProcessRecord]) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        // Started on a whole second: condition heartbeats are whole seconds, so one at or
        // after it is the new agent's, one before it the old agent's.
        let started = next_whole_second();
        if let Ok(wait) = started.duration_since(SystemTime::now()) {
            std::thread::sleep(wait);
        }
        for old in dead {
            let Some(node) = state
                .nodes
                .iter()
                .find(|n| old.node.as_deref() == Some(n.name.as_str()))
            else {
                continue;
            };
            let ns = NetNs::open(&node.netns)
                .with_context(|| format!("open the namespace of {}", node.name))?;
            self.processes
                .processes
                .retain(|p| !(p.component == "agent" && p.node == old.node));
            self.restarted.insert(node.name.clone(), started);
            self.start_agent(state, node, &ns)?;
            let new = self
                .processes
                .find("agent", Some(&node.name))
                .map_or(0, |p| p.pid);
            println!(
                "restarted the agent of {} (pid {} had exited; now pid {new}, log {})",
                node.name,
                old.pid,
                old.log.display()
            );
        }
        Ok(())
    }

    fn build(&mut self) -> Result<()> {
        let paths = self.paths.clone();
        for dir in [&paths.run, &paths.lib, &paths.logs()] {
            fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let underlay = self.plan.underlay;
        let store = match self.plan.store {
            StoreKind::Embedded => "embedded".to_string(),
            StoreKind::Etcd => {
                // The port is chosen when etcd starts; recorded below.
                "etcd".to_string()
            }
        };
        let mut state = LabState {
            name: paths.name.clone(),
            nodes: (1..=self.plan.nodes)
                .map(|i| {
                    let name = paths.node_name(i);
                    NodeState {
                        netns: name.clone(),
                        node_ip: underlay.node_ip(i),
                        state_dir: paths.node_state_dir(&name),
                        log_dir: paths.node_log_dir(&name),
                        name,
                    }
                })
                .collect(),
            apiserver: ApiserverState {
                port: 0,
                kubeconfig: paths.kubeconfig(),
                agent_kubeconfig: paths.agent_kubeconfig(),
                underlay_address: format!("{}:{AGENT_API_PORT}", underlay.bridge_ip()),
            },
            backend: self.plan.backend,
            proxy_mode: self.plan.proxy_mode,
            store,
            underlay: UnderlayState {
                netns: paths.underlay_ns(),
                bridge: UNDERLAY_BRIDGE.to_string(),
                cidr: underlay.cidr,
                address: underlay.bridge_ip(),
            },
            cluster_cidr: self.plan.cluster_cidr,
            service_cidr: self.plan.service_cidr,
            node_cidr_size: self.plan.node_cidr_size,
            network: self.plan.network.clone(),
            dns: self.plan.dns.clone(),
        };
        // Recorded first, so that `lab down` finds everything even if the
        // rest fails half-way.
        state.save(&paths)?;
        self.processes.save(&paths)?;

        let underlay_ns = step(
            &format!(
                "creating underlay {} ({UNDERLAY_BRIDGE} {}/{})",
                paths.underlay_ns(),
                underlay.bridge_ip(),
                underlay.cidr.prefix_len()
            ),
            || Ok((topology::create_underlay(&paths, &underlay)?, "ok".into())),
        )?;
        let mut node_ns = Vec::new();
        for i in 1..=self.plan.nodes {
            let ns = step(
                &format!("node{i} ({}, {})", paths.node_name(i), underlay.node_ip(i)),
                || {
                    Ok((
                        topology::create_node(&paths, &underlay_ns, &underlay, i)?,
                        "ok".into(),
                    ))
                },
            )?;
            node_ns.push(ns);
        }

        if self.plan.store == StoreKind::Etcd {
            let port = step("etcd", || {
                let port = self.start_etcd()?;
                Ok((port, format!("ready on 127.0.0.1:{port}")))
            })?;
            state.store = format!("etcd://127.0.0.1:{port}");
            state.save(&paths)?;
        }

        step("apiserver", || {
            let port = self.start_apiserver(&mut state, &underlay_ns, &underlay)?;
            Ok(((), format!("ready on 127.0.0.1:{port}")))
        })?;
        drop(underlay_ns);

        step(&format!("starting {} agents", state.nodes.len()), || {
            for (node, ns) in state.nodes.iter().zip(&node_ns) {
                self.start_agent(&state, node, ns)?;
            }
            Ok(((), "ok".into()))
        })?;
        drop(node_ns);
        self.wait_nodes_ready(&state)?;
        let api = self.api.as_ref().context("no API client")?;
        step("cluster DNS", || {
            Ok(((), super::dns::deploy(api, &state, &self.exe)?))
        })
    }

    fn record(
        &mut self,
        component: &str,
        node: Option<&str>,
        started: &Started,
        log: &Path,
    ) -> Result<()> {
        self.processes.processes.push(ProcessRecord {
            component: component.to_string(),
            node: node.map(str::to_string),
            pid: started.pid,
            start_time: started.start_time,
            log: log.to_path_buf(),
        });
        self.processes.save(&self.paths)
    }

    fn start_etcd(&mut self) -> Result<u16> {
        let client = processes::free_loopback_port()?;
        let peer = processes::free_loopback_port()?;
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let data = self.paths.etcd_data();
        fs::create_dir_all(&data).with_context(|| format!("create {}", data.display()))?;
        let mut cmd = Command::new(ETCD_BIN);
        cmd.arg(format!("--name={}", self.paths.name))
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={}={peer_url}", self.paths.name))
            .arg("--initial-cluster-state=new")
            .arg("--log-level=warn");
        let log = self.paths.log_of("etcd");
        let started = spawn_daemon(cmd, &log, None)?;
        self.record("etcd", None, &started, &log)?;
        let ready = wait_until(ETCD_READY_TIMEOUT, || {
            if !is_alive(started.pid, started.start_time) {
                return Err(anyhow!(
                    "etcd (pid {}) exited; the end of {}:\n{}",
                    started.pid,
                    log.display(),
                    log_tail(&log, 15)
                ));
            }
            // etcd 3.4 answers {"health":"true"} once it has a leader.
            Ok(
                http::get(client, "/health", Duration::from_secs(2)).is_ok_and(|r| {
                    r.status == 200 && String::from_utf8_lossy(&r.body).contains("true")
                }),
            )
        })?;
        if !ready {
            bail!(
                "etcd on 127.0.0.1:{client} was not healthy within {} s; see {}",
                ETCD_READY_TIMEOUT.as_secs(),
                log.display()
            );
        }
        Ok(client)
    }

    fn start_apiserver(
        &mut self,
        state: &mut LabState,
        underlay_ns: &NetNs,
        underlay: &Underlay,
    ) -> Result<u16> {
        let listener = topology::agent_listener(underlay_ns, underlay)?;
        let port = processes::free_loopback_port()?;
        state.apiserver.port = port;
        state.save(&self.paths)?;
        let data = self.paths.apiserver_data();
        fs::create_dir_all(&data).with_context(|| format!("create {}", data.display()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("apiserver")
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data)
            .arg("--store")
            .arg(&state.store)
            .arg("--cluster-cidr")
            .arg(state.cluster_cidr.to_string())
            .arg("--service-cidr")
            .arg(state.service_cidr.to_string())
            .arg("--node-cidr-size")
            .arg(state.node_cidr_size.to_string())
            .arg("--lb-pool")
            .arg(LB_POOL)
            .arg("--listen-fd")
            .arg(processes::INHERITED_FD.to_string())
            .arg("--listen-fd-kubeconfig")
            .arg(&state.apiserver.agent_kubeconfig);
        let log = self.paths.log_of("apiserver");
        let started = spawn_daemon(cmd, &log, Some(&listener))?;
        drop(listener);
        self.record("apiserver", None, &started, &log)?;
        let loopback_kubeconfig = data.join("kubeconfig");
        let ready = wait_until(APISERVER_READY_TIMEOUT, || {
            if !is_alive(started.pid, started.start_time) {
                return Err(anyhow!(
                    "the apiserver (pid {}) exited; the end of {}:\n{}",
                    started.pid,
                    log.display(),
                    log_tail(&log, 15)
                ));
            }
            // The apiserver writes its kubeconfigs once it serves.
            if !(loopback_kubeconfig.exists() && state.apiserver.agent_kubeconfig.exists()) {
                return Ok(false);
            }
            if self.api.is_none() {
                self.api = Api::connect(&loopback_kubeconfig).ok();
            }
            Ok(self.api.as_ref().is_some_and(|a| a.readyz().is_ok()))
        })?;
        if !ready {
            bail!(
                "the apiserver on 127.0.0.1:{port} was not ready (with {} and {} written) within {} s; see {}",
                loopback_kubeconfig.display(),
                state.apiserver.agent_kubeconfig.display(),
                APISERVER_READY_TIMEOUT.as_secs(),
                log.display()
            );
        }
        // Users get the loopback kubeconfig at the lab's well-known path; a
        // link, so it follows the apiserver should it rewrite it.
        let link = &state.apiserver.kubeconfig;
        let _ = fs::remove_file(link);
        std::os::unix::fs::symlink(Path::new("apiserver").join("kubeconfig"), link).with_context(
            || {
                format!(
                    "link {} to {}",
                    link.display(),
                    loopback_kubeconfig.display()
                )
            },
        )?;
        Ok(port)
    }

    fn start_agent(&mut self, state: &LabState, node: &NodeState, ns: &NetNs) -> Result<()> {
        let cni_conf_dir = node.state_dir.join("cni").join("net.d");
        for dir in [&node.state_dir, &node.log_dir, &cni_conf_dir] {
            fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let bin_dir = self
            .exe
            .parent()
            .with_context(|| format!("{} has no directory", self.exe.display()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("agent")
            .arg("--node-name")
            .arg(&node.name)
            .arg("--kubeconfig")
            .arg(&state.apiserver.agent_kubeconfig)
            .arg("--node-ip")
            .arg(node.node_ip.to_string())
            .arg("--cluster-cidr")
            .arg(state.cluster_cidr.to_string())
            .arg("--cni-bin-dir")
            .arg(bin_dir)
            .arg("--cni-conf-dir")
            .arg(&cni_conf_dir)
            .arg("--state-dir")
            .arg(&node.state_dir)
            .arg("--log-dir")
            .arg(&node.log_dir)
            .arg("--subnet-file")
            .arg(node.state_dir.join("subnet.env"));
        if self.agent_flags.backend {
            cmd.arg("--backend").arg(state.backend.as_str());
        }
        if self.agent_flags.proxy_mode {
            cmd.arg("--proxy-mode").arg(state.proxy_mode.as_str());
        }
        if self.agent_flags.service_cidr {
            cmd.arg("--service-cidr")
                .arg(state.service_cidr.to_string());
        }
        if let Some(mtu) = state.network.mtu {
            cmd.arg("--mtu").arg(mtu.to_string());
        }
        if !state.network.ip_masq {
            cmd.arg("--ip-masq").arg("false");
        }
        if state.network.vxlan_direct_routing {
            cmd.arg("--vxlan-direct-routing");
        }
        super::dns::agent_args(&state.dns, &mut cmd);
        ns.enter_on_exec(&mut cmd)?;
        let log = self.paths.log_of(&format!("agent-{}", node.name));
        let started = spawn_daemon(cmd, &log, None)
            .with_context(|| format!("start the agent of {}", node.name))?;
        self.record("agent", Some(&node.name), &started, &log)
    }

    /// Waits until the API shows every node Ready with its network available; stops
    /// early, naming the node and its log, if an agent exits or a node's network stays
    /// unavailable for [`NETWORK_GRACE`].
    fn wait_nodes_ready(&self, state: &LabState) -> Result<()> {
        let total = state.nodes.len();
        let tty = std::io::stdout().is_terminal();
        let api = self
            .api
            .as_ref()
            .context("no API client: the apiserver was not started")?;
        let deadline = Instant::now() + self.plan.ready_timeout;
        let mut shown = usize::MAX;
        let mut last_error = String::new();
        let mut unavailable_since: HashMap<String, Instant> = HashMap::new();
        loop {
            self.check_agents_run(state, tty)?;
            let nodes = match status::api_nodes(api) {
                Ok(nodes) => self.reported_since_restart(nodes),
                Err(e) => {
                    last_error = format!("{e:#}");
                    Default::default()
                }
            };
            let waiting: Vec<&NodeState> = state
                .nodes
                .iter()
                .filter(|n| !nodes.get(&n.name).is_some_and(ApiNode::is_ready))
                .collect();
            let ready = total - waiting.len();
            if tty && ready != shown {
                print!("\ragents: {ready}/{total} nodes Ready");
                let _ = std::io::stdout().flush();
                shown = ready;
            }
            if waiting.is_empty() {
                if tty {
                    println!();
                } else {
                    println!("agents: {ready}/{total} nodes Ready");
                }
                return Ok(());
            }
            let now = Instant::now();
            track_unavailable(&mut unavailable_since, &nodes, now);
            let given_up = waiting.iter().find(|n| {
                unavailable_since
                    .get(&n.name)
                    .is_some_and(|since| now.duration_since(*since) >= NETWORK_GRACE)
            });
            if given_up.is_some() || now >= deadline {
                if tty {
                    println!();
                }
                let node = given_up.copied().unwrap_or(waiting[0]);
                bail!(self.not_ready_message(
                    node,
                    nodes.get(&node.name),
                    ready,
                    total,
                    &last_error
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The Nodes, with the network condition of a node whose agent this run restarted
    /// dropped until the new agent has posted it (an agent that does not know its network
    /// yet keeps the old agent's verdict on the Node).
    fn reported_since_restart(
        &self,
        mut nodes: BTreeMap<String, ApiNode>,
    ) -> BTreeMap<String, ApiNode> {
        for (name, node) in nodes.iter_mut() {
            let Some(restart) = self.restarted.get(name) else {
                continue;
            };
            let fresh = node
                .network
                .as_ref()
                .and_then(|n| n.heartbeat)
                .is_some_and(|beat| beat >= *restart);
            if !fresh {
                node.network = None;
            }
        }
        nodes
    }

    /// Fails when the agent of a node has exited.
    fn check_agents_run(&self, state: &LabState, tty: bool) -> Result<()> {
        for node in &state.nodes {
            if let Some(p) = self.processes.find("agent", Some(&node.name))
                && !is_alive(p.pid, p.start_time)
            {
                if tty {
                    println!();
                }
                bail!(
                    "the agent of {} (pid {}) exited; the end of its log {}:\n{}",
                    node.name,
                    p.pid,
                    p.log.display(),
                    log_tail(&p.log, 15)
                );
            }
        }
        Ok(())
    }

    /// Why `node` is not Ready (with its network available), with what its agent's log
    /// says: its last warnings and errors when its network is unavailable, else its end.
    fn not_ready_message(
        &self,
        node: &NodeState,
        api: Option<&ApiNode>,
        ready: usize,
        total: usize,
        list_error: &str,
    ) -> String {
        let log = self
            .processes
            .find("agent", Some(&node.name))
            .map(|p| p.log.clone())
            .unwrap_or_else(|| self.paths.log_of(&format!("agent-{}", node.name)));
        let name = &node.name;
        if let Some(n) = api
            .and_then(|a| a.network.as_ref())
            .filter(|n| n.unavailable)
        {
            let lines = diagnose::log_warnings(&log, diagnose::AGENT_LINES);
            return format!(
                "{ready}/{total} nodes Ready: the network of node {name} is unavailable ({}): {}\nthe last warnings and errors of its agent's log {}:\n  {}",
                n.reason,
                n.message,
                log.display(),
                lines.join("\n  ")
            );
        }
        let why = match api {
            Some(a) if a.ready != "True" => format!("its Ready condition is {}", a.ready),
            Some(_) => {
                "it has not reported its network yet (no NetworkUnavailable condition)".to_string()
            }
            None if list_error.is_empty() => "it has not registered".to_string(),
            None => format!("it has not registered (listing Nodes: {list_error})"),
        };
        format!(
            "{ready}/{total} nodes Ready after {} s: node {name} is not Ready ({why}); see its agent's log {}:\n{}",
            self.plan.ready_timeout.as_secs(),
            log.display(),
            log_tail(&log, 15)
        )
    }
}

/// The next whole second of the clock the agents stamp their heartbeats with.
fn next_whole_second() -> SystemTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    UNIX_EPOCH + Duration::from_secs(now.as_secs() + 1)
}

/// Notes since when each node has reported its network unavailable (forgetting the
/// nodes that no longer do).
fn track_unavailable(
    since: &mut HashMap<String, Instant>,
    nodes: &BTreeMap<String, ApiNode>,
    now: Instant,
) {
    since.retain(|name, _| {
        nodes
            .get(name)
            .and_then(|n| n.network.as_ref())
            .is_some_and(|n| n.unavailable)
    });
    for (name, node) in nodes {
        if node.network.as_ref().is_some_and(|n| n.unavailable) {
            since.entry(name.clone()).or_insert(now);
        }
    }
}

/// Polls `check` every 50 ms until it returns true (`Ok(true)`), fails, or
/// `within` passes (`Ok(false)`).
fn wait_until(within: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + within;
    loop {
        if check()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args() -> UpArgs {
        UpArgs {
            name: "lab".into(),
            nodes: None,
            backend: None,
            proxy_mode: None,
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
        }
    }

    #[test]
    fn plan_defaults_and_checks() {
        let plan = Plan::from_args(&args()).unwrap();
        assert_eq!(plan.nodes, 2);
        assert_eq!(plan.underlay.cidr.to_string(), "172.30.0.0/24");
        let mut a = args();
        a.nodes = Some(0);
        assert!(Plan::from_args(&a).is_err());
        a.nodes = Some(65);
        assert!(Plan::from_args(&a).is_err());
        let mut a = args();
        a.underlay_cidr = Some("10.244.3.0/24".parse().unwrap());
        let e = Plan::from_args(&a).unwrap_err().to_string();
        assert!(e.contains("overlaps --cluster-cidr"), "{e}");
        let mut a = args();
        a.service_cidr = Some("10.244.0.0/12".parse().unwrap());
        assert!(Plan::from_args(&a).is_err());
        let mut a = args();
        a.node_cidr_size = Some(12);
        let e = Plan::from_args(&a).unwrap_err().to_string();
        assert!(e.contains("--node-cidr-size 12 must be longer"), "{e}");
        let mut a = args();
        a.cluster_cidr = Some("10.244.0.0/23".parse().unwrap());
        a.nodes = Some(3);
        let e = Plan::from_args(&a).unwrap_err().to_string();
        assert!(
            e.contains("holds 2 node subnets of /24, fewer than the 3 nodes"),
            "{e}"
        );
    }

    #[test]
    fn network_options_default_to_the_agents_and_are_checked() {
        assert_eq!(
            Plan::from_args(&args()).unwrap().network,
            NetworkOptions::default()
        );
        let mut a = args();
        a.mtu = Some(1300);
        a.ip_masq = Some(false);
        a.vxlan_direct_routing = true;
        let network = Plan::from_args(&a).unwrap().network;
        assert_eq!(
            network,
            NetworkOptions {
                mtu: Some(1300),
                ip_masq: false,
                vxlan_direct_routing: true
            }
        );
        let mut a = args();
        a.mtu = Some(100);
        let e = Plan::from_args(&a).unwrap_err().to_string();
        assert!(
            e.contains("--mtu 100: an IPv4 pod MTU is 576 to 65535"),
            "{e}"
        );
        let mut a = args();
        a.backend = Some(Backend::HostGw);
        a.vxlan_direct_routing = true;
        let e = Plan::from_args(&a).unwrap_err().to_string();
        assert!(
            e.contains("--vxlan-direct-routing is a setting of the vxlan backend, not of host-gw"),
            "{e}"
        );
    }

    #[test]
    fn a_state_without_network_options_has_the_defaults() {
        let old = r#"{"name":"x","nodes":[],"apiserver":{"port":1,"kubeconfig":"/k","agent_kubeconfig":"/a","underlay_address":"172.30.0.1:6443"},"backend":"vxlan","proxy_mode":"nftables","store":"embedded","underlay":{"netns":"x-underlay","bridge":"underlay0","cidr":"172.30.0.0/24","address":"172.30.0.1"},"cluster_cidr":"10.244.0.0/16","service_cidr":"10.96.0.0/12"}"#;
        let state: LabState = serde_json::from_str(old).unwrap();
        assert_eq!(state.network, NetworkOptions::default());
    }
}
