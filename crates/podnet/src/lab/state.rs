//! The lab's records: `/var/lib/podnet/<lab>/lab.json` (what the lab is) and
//! `/run/podnet/<lab>/processes.json` (the processes it started).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{Backend, LabPaths, ProxyMode};

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct LabState {
    pub name: String,
    pub nodes: Vec<NodeState>,
    pub apiserver: ApiserverState,
    pub backend: Backend,
    pub proxy_mode: ProxyMode,
    /// `embedded` or `etcd://127.0.0.1:PORT`.
    pub store: String,
    pub underlay: UnderlayState,
    pub cluster_cidr: ipnet::Ipv4Net,
    pub service_cidr: ipnet::Ipv4Net,
    /// The prefix length of a node's pod subnet (labs made before it was recorded: 24).
    #[serde(default = "default_node_cidr_size")]
    pub node_cidr_size: u8,
    /// The agents' node network settings (labs made before they were recorded: defaults).
    #[serde(default)]
    pub network: super::NetworkOptions,
    /// The cluster DNS (labs made before it: none).
    #[serde(default)]
    pub dns: super::dns::DnsOptions,
}

fn default_node_cidr_size() -> u8 {
    24
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct NodeState {
    pub name: String,
    pub netns: String,
    pub node_ip: std::net::Ipv4Addr,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ApiserverState {
    /// The loopback port (plain HTTP) users and `lab status` talk to.
    pub port: u16,
    /// The users' kubeconfig.
    pub kubeconfig: PathBuf,
    /// The agents' kubeconfig (https on the underlay, with a token).
    pub agent_kubeconfig: PathBuf,
    /// Where agents reach it: `<bridge address>:6443` in the underlay.
    pub underlay_address: String,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct UnderlayState {
    pub netns: String,
    pub bridge: String,
    pub cidr: ipnet::Ipv4Net,
    pub address: std::net::Ipv4Addr,
}

impl LabState {
    pub fn load(paths: &LabPaths) -> Result<Option<LabState>> {
        read_json(&paths.lab_json())
    }

    pub fn save(&self, paths: &LabPaths) -> Result<()> {
        write_json(&paths.lab_json(), self)
    }
}

/// A process the lab started, identified by pid and start time (so a reused
/// pid is never signalled).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ProcessRecord {
    /// `apiserver`, `etcd` or `agent`.
    pub component: String,
    /// The node, for agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub pid: i32,
    /// Field 22 of /proc/PID/stat (clock ticks since boot).
    pub start_time: u64,
    pub log: PathBuf,
}

impl ProcessRecord {
    /// A name for messages: `apiserver`, `agent of lab-node1`.
    pub fn label(&self) -> String {
        match &self.node {
            Some(node) => format!("{} of {node}", self.component),
            None => self.component.clone(),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Processes {
    pub processes: Vec<ProcessRecord>,
}

impl Processes {
    pub fn load(paths: &LabPaths) -> Result<Processes> {
        Ok(read_json(&paths.processes_json())?.unwrap_or_default())
    }

    pub fn save(&self, paths: &LabPaths) -> Result<()> {
        write_json(&paths.processes_json(), self)
    }

    pub fn find(&self, component: &str, node: Option<&str>) -> Option<&ProcessRecord> {
        self.processes
            .iter()
            .find(|p| p.component == component && p.node.as_deref() == node)
    }
}

/// Reads a JSON file; `None` when it does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    serde_json::from_str(&text).map(Some).with_context(|| {
        format!(
            "{} is not a valid lab record (remove the lab with `podnet lab down`)",
            path.display()
        )
    })
}

/// Writes a JSON file atomically (temporary file, then rename).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let text = serde_json::to_string_pretty(value).context("encode the lab record")?;
    let tmp = path.with_extension("json.tmp");
    let mut file = fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("rename {} into place", tmp.display()))
}
