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
    pub pod_cidr: String,
    pub pods: usize,
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
            match self.processes.find(&component, node.as_deref()) {
                None => problems.push(format!(
                    "no {component}{} was recorded in {}",
                    node.as_ref()
                        .map(|n| format!(" of {n}"))
                        .unwrap_or_default(),
                    self.paths.processes_json().display()
                )),
                Some(p) if !self.alive(p) => problems.push(format!(
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
        let (ready, cidr, pods) = match (api, api_nodes) {
            (Some(n), _) => (
                n.ready.clone(),
                if n.pod_cidr.is_empty() {
                    "-".into()
                } else {
                    n.pod_cidr.clone()
                },
                n.pods.to_string(),
            ),
            (None, Some(_)) => ("not registered".into(), "-".into(), "-".into()),
            (None, None) => ("?".into(), "?".into(), "?".into()),
        };
        rows.push([
            node.name.clone(),
            ns.into(),
            node.node_ip.to_string(),
            agent,
            ready,
            cidr,
            pods,
        ]);
    }
    out.push_str(&table(&rows));
    let problems = obs.problems();
    if problems.is_empty() {
        let ready = api_nodes
            .map(|n| {
                state
                    .nodes
                    .iter()
                    .filter(|s| n.get(&s.name).is_some_and(|a| a.ready == "True"))
                    .count()
            })
            .unwrap_or(0);
        out.push_str(&format!(
            "healthy: {ready}/{} nodes Ready; export KUBECONFIG={}\n",
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
