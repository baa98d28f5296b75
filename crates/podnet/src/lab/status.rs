//! `podnet lab status`: what a lab is made of and how healthy it is. The
//! observation here is also what `lab up` uses to adopt a running lab or say
//! what is in the way.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use super::api::Api;
use super::processes::is_alive;
use super::state::{LabState, ProcessRecord, Processes};
use super::{LabPaths, StatusArgs, topology, validate_name};

/// A Node as the API shows it.
#[derive(Debug, Clone, Default)]
pub struct ApiNode {
    pub ready: String,
    /// Its `NetworkUnavailable` condition; `None` until the agent has reported it.
    pub network: Option<NetworkCondition>,
    pub pod_cidr: String,
    pub pods: usize,
}

/// A Node's `NetworkUnavailable` condition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkCondition {
    /// The status is `True`.
    pub unavailable: bool,
    pub reason: String,
    pub message: String,
    /// Its `lastHeartbeatTime` (whole seconds): when an agent last posted it.
    pub heartbeat: Option<std::time::SystemTime>,
}

impl ApiNode {
    /// Ready, with its network reported available: what `lab up` waits for.
    pub fn is_ready(&self) -> bool {
        self.ready == "True" && self.network.as_ref().is_some_and(|n| !n.unavailable)
    }

    /// The network cell of `lab status`: `available`, `UNAVAILABLE (Reason)`, or `-` when
    /// not reported yet.
    pub fn network_cell(&self) -> String {
        match &self.network {
            None => "-".into(),
            Some(n) if n.unavailable => format!("UNAVAILABLE ({})", n.reason),
            Some(_) => "available".into(),
        }
    }
}

/// The `NetworkUnavailable` condition of a Node object.
fn network_condition(node: &serde_json::Value) -> Option<NetworkCondition> {
    let c = node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "NetworkUnavailable")?;
    let text = |k: &str| c[k].as_str().unwrap_or("").to_string();
    let heartbeat = chrono::DateTime::parse_from_rfc3339(&text("lastHeartbeatTime"))
        .ok()
        .map(std::time::SystemTime::from);
    Some(NetworkCondition {
        unavailable: c["status"] == "True",
        reason: text("reason"),
        message: text("message"),
        heartbeat,
    })
}

/// Everything found about a lab.
pub struct Observation {
    pub paths: LabPaths,
    pub state: Option<LabState>,
    pub processes: Processes,
    /// The lab's named namespaces present now.
    pub namespaces: Vec<String>,
    pub run_dir: bool,
    pub lib_dir: bool,
    /// `/readyz` on the loopback port: Ok("ok") or why not.
    pub readyz: Option<Result<String, String>>,
    /// Nodes by name from the API, or why they could not be listed.
    pub api_nodes: Option<Result<BTreeMap<String, ApiNode>, String>>,
}

impl Observation {
    /// Whether nothing of the lab is on this machine.
    pub fn is_absent(&self) -> bool {
        self.state.is_none()
            && self.processes.processes.is_empty()
            && self.namespaces.is_empty()
            && !self.run_dir
            && !self.lib_dir
    }

    pub fn alive(&self, p: &ProcessRecord) -> bool {
        is_alive(p.pid, p.start_time)
    }

    /// What is wrong with the lab, empty when it is healthy (every namespace
    /// and process there, the API ready). Nodes that are not Ready are not
    /// counted here: their agents are running and may still get there.
    pub fn problems(&self) -> Vec<String> {
        self.problems_but(false)
    }

    /// What is wrong besides agents that exited (which `lab up` starts again).
    pub fn problems_but_dead_agents(&self) -> Vec<String> {
        self.problems_but(true)
    }

    /// The recorded agents of the lab's nodes that are no longer running.
    pub fn dead_agents(&self) -> Vec<&ProcessRecord> {
        let Some(state) = &self.state else {
            return Vec::new();
        };
        state
            .nodes
            .iter()
            .filter_map(|n| self.processes.find("agent", Some(&n.name)))
            .filter(|p| !self.alive(p))
            .collect()
    }

    fn problems_but(&self, skip_dead_agents: bool) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(state) = &self.state else {
            if self.is_absent() {
                return vec![format!("there is no lab called {}", self.paths.name)];
            }
            problems.push(format!(
                "{} is missing, so this is not a complete lab",
                self.paths.lab_json().display()
            ));
            for ns in &self.namespaces {
                problems.push(format!("network namespace {ns} exists"));
            }
            if self.paths.demo_pids().exists() {
                problems.push(format!(
                    "{} exists: `podnet lab demo --keep` left its lab up",
                    self.paths.demo_pids().display()
                ));
            }
            for dir in [&self.paths.run, &self.paths.lib] {
                if dir.exists() {
                    problems.push(format!("directory {} exists", dir.display()));
                }
            }
            for p in &self.processes.processes {
                if self.alive(p) {
                    problems.push(format!("{} is running (pid {})", p.label(), p.pid));
                }
            }
            return problems;
        };
        for ns in std::iter::once(&state.underlay.netns).chain(state.nodes.iter().map(|n| &n.netns))
        {
            if !self.namespaces.contains(ns) {
                problems.push(format!("network namespace {ns} is missing"));
            }
        }
        let mut expected: Vec<(String, Option<String>)> = vec![("apiserver".into(), None)];
        if state.store.starts_with("etcd") {
            expected.push(("etcd".into(), None));
        }
        expected.extend(
            state
                .nodes
                .iter()
                .map(|n| ("agent".to_string(), Some(n.name.clone()))),
        );
        for (component, node) in expected {
            // An exited agent is started again by `lab up` when asked to skip it.
            let restartable = skip_dead_agents && component == "agent";
            match self.processes.find(&component, node.as_deref()) {
                None => problems.push(format!(
                    "no {component}{} was recorded in {}",
                    node.as_ref()
                        .map(|n| format!(" of {n}"))
                        .unwrap_or_default(),
                    self.paths.processes_json().display()
                )),
                Some(p) if !self.alive(p) && !restartable => problems.push(format!(
                    "{} (pid {}) is not running; its log is {}",
                    p.label(),
                    p.pid,
                    p.log.display()
                )),
                Some(_) => {}
            }
        }
        match &self.readyz {
            Some(Ok(_)) | None => {}
            Some(Err(e)) => problems.push(format!(
                "the apiserver on 127.0.0.1:{} is not ready: {e}",
                state.apiserver.port
            )),
        }
        problems
    }
}

/// Looks at the lab named in `paths`: records, namespaces, processes and,
/// when the apiserver runs, its readiness and Nodes.
pub fn observe(paths: &LabPaths) -> Result<Observation> {
    let state = LabState::load(paths)?;
    let processes = Processes::load(paths)?;
    let namespaces = topology::lab_namespaces(paths)?;
    let mut obs = Observation {
        paths: paths.clone(),
        state,
        processes,
        namespaces,
        run_dir: paths.run.exists(),
        lib_dir: paths.lib.exists(),
        readyz: None,
        api_nodes: None,
    };
    if let Some(state) = &obs.state {
        let api_alive = obs
            .processes
            .find("apiserver", None)
            .is_some_and(|p| obs.alive(p));
        if !api_alive {
            obs.readyz = Some(Err("the apiserver process is not running".into()));
        } else {
            match Api::connect(&state.apiserver.kubeconfig) {
                Err(e) => obs.readyz = Some(Err(format!("{e:#}"))),
                Ok(api) => {
                    obs.readyz = Some(api.readyz());
                    if matches!(obs.readyz, Some(Ok(_))) {
                        obs.api_nodes = Some(api_nodes(&api).map_err(|e| format!("{e:#}")));
                    }
                }
            }
        }
    }
    Ok(obs)
}

/// Nodes with their Ready condition, podCIDR and number of pods bound to them.
pub fn api_nodes(api: &Api) -> Result<BTreeMap<String, ApiNode>> {
    let nodes = api.get_json("/api/v1/nodes")?;
    let mut out = BTreeMap::new();
    for node in nodes["items"].as_array().into_iter().flatten() {
        let Some(name) = node["metadata"]["name"].as_str() else {
            continue;
        };
        let ready = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .and_then(|c| c["status"].as_str())
            .unwrap_or("Unknown")
            .to_string();
        let pod_cidr = node["spec"]["podCIDR"].as_str().unwrap_or("").to_string();
        out.insert(
            name.to_string(),
            ApiNode {
                ready,
                network: network_condition(node),
                pod_cidr,
                pods: 0,
            },
        );
    }
    let pods = api.get_json("/api/v1/pods")?;
    for pod in pods["items"].as_array().into_iter().flatten() {
        if let Some(node) = pod["spec"]["nodeName"]
            .as_str()
            .and_then(|n| out.get_mut(n))
        {
            node.pods += 1;
        }
    }
    Ok(out)
}

pub fn run(args: StatusArgs) -> Result<()> {
    validate_name(&args.name)?;
    let paths = LabPaths::new(&args.name);
    let obs = observe(&paths)?;
    if obs.is_absent() {
        bail!(
            "there is no lab called {0}; start one with `podnet lab up --name {0}`",
            args.name
        );
    }
    print!("{}", render(&obs));
    Ok(())
}

/// The status report: a summary, the apiserver, a table of nodes and any
/// problems.
pub fn render(obs: &Observation) -> String {
    let mut out = String::new();
    let name = &obs.paths.name;
    let Some(state) = &obs.state else {
        out.push_str(&format!("lab {name} is not complete:\n"));
        for p in obs.problems() {
            out.push_str(&format!("  - {p}\n"));
        }
        out.push_str(&format!(
            "remove what is left with `podnet lab down --name {name}`\n"
        ));
        return out;
    };
    out.push_str(&format!(
        "lab {name}: {} node{}, backend {}, proxy {}, store {}, underlay {} (namespace {})\n",
        state.nodes.len(),
        if state.nodes.len() == 1 { "" } else { "s" },
        state.backend.as_str(),
        state.proxy_mode.as_str(),
        state.store,
        state.underlay.cidr,
        state.underlay.netns,
    ));
    for component in ["apiserver", "etcd"] {
        let Some(p) = obs.processes.find(component, None) else {
            continue;
        };
        let running = if obs.alive(p) {
            "running"
        } else {
            "NOT RUNNING"
        };
        let extra = if component == "apiserver" {
            let ready = match &obs.readyz {
                Some(Ok(r)) => r.clone(),
                Some(Err(e)) => format!("failing ({e})"),
                None => "unknown".into(),
            };
            format!(
                ", 127.0.0.1:{} /readyz {ready}, agents use {}",
                state.apiserver.port, state.apiserver.underlay_address
            )
        } else {
            String::new()
        };
        out.push_str(&format!("{component}: pid {} {running}{extra}\n", p.pid));
    }
    let api_nodes = match &obs.api_nodes {
        Some(Ok(nodes)) => Some(nodes),
        Some(Err(e)) => {
            out.push_str(&format!("cannot list Nodes: {e}\n"));
            None
        }
        None => None,
    };
    let mut rows = vec![[
        "NODE".to_string(),
        "NAMESPACE".into(),
        "NODE IP".into(),
        "AGENT".into(),
        "READY".into(),
        "NETWORK".into(),
        "POD CIDR".into(),
        "PODS".into(),
    ]];
    for node in &state.nodes {
        let ns = if obs.namespaces.contains(&node.netns) {
            "present"
        } else {
            "MISSING"
        };
        let agent = match obs.processes.find("agent", Some(&node.name)) {
            Some(p) if obs.alive(p) => format!("{} running", p.pid),
            Some(p) => format!("{} EXITED", p.pid),
            None => "none".into(),
        };
        let api = api_nodes.and_then(|n| n.get(&node.name));
        let (ready, network, cidr, pods) = match (api, api_nodes) {
            (Some(n), _) => (
                n.ready.clone(),
                n.network_cell(),
                if n.pod_cidr.is_empty() {
                    "-".into()
                } else {
                    n.pod_cidr.clone()
                },
                n.pods.to_string(),
            ),
            (None, Some(_)) => ("not registered".into(), "-".into(), "-".into(), "-".into()),
            (None, None) => ("?".into(), "?".into(), "?".into(), "?".into()),
        };
        rows.push([
            node.name.clone(),
            ns.into(),
            node.node_ip.to_string(),
            agent,
            ready,
            network,
            cidr,
            pods,
        ]);
    }
    out.push_str(&table(&rows));
    out.push_str(&network_problems(state, api_nodes));
    let problems = obs.problems();
    if problems.is_empty() {
        let ready = api_nodes
            .map(|n| {
                state
                    .nodes
                    .iter()
                    .filter(|s| n.get(&s.name).is_some_and(ApiNode::is_ready))
                    .count()
            })
            .unwrap_or(0);
        // Ready counts only with the network available: a node whose proxy or overlay
        // fails runs pods that cannot talk.
        let verdict = if ready == state.nodes.len() {
            "healthy"
        } else {
            "running"
        };
        out.push_str(&format!(
            "{verdict}: {ready}/{} nodes Ready; export KUBECONFIG={}\n",
            state.nodes.len(),
            state.apiserver.kubeconfig.display()
        ));
    } else {
        out.push_str("problems:\n");
        for p in problems {
            out.push_str(&format!("  - {p}\n"));
        }
    }
    out
}

/// The nodes whose network is unavailable, with their condition's reason and message.
fn network_problems(state: &LabState, api_nodes: Option<&BTreeMap<String, ApiNode>>) -> String {
    let mut out = String::new();
    for node in &state.nodes {
        if let Some(n) = api_nodes
            .and_then(|a| a.get(&node.name))
            .and_then(|a| a.network.as_ref())
            .filter(|n| n.unavailable)
        {
            out.push_str(&format!(
                "network unavailable on {} ({}): {}\n",
                node.name, n.reason, n.message
            ));
        }
    }
    out
}

/// Left-aligned columns separated by three spaces, like kubectl's tables.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
