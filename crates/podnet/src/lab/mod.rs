//! `podnet lab up|down|status`: a multi-node cluster on one machine. Every
//! node is a network namespace (`<lab>-node<i>`) on an underlay switch
//! namespace (`<lab>-underlay`, bridge `underlay0`) and runs a real
//! `podnet agent`; one `podnet apiserver` serves the API on loopback for
//! users and, through a socket created inside the underlay namespace, on the
//! underlay for the agents. Nothing is added to the root namespace.
//!
//! All lab state lives under `/run/podnet/<lab>` (runtime: processes, node
//! state) and `/var/lib/podnet/<lab>` (lab.json, kubeconfigs, logs, store).

mod api;
pub mod diagnose;
pub mod dns;
pub mod down;
mod http;
mod processes;
pub(crate) mod state;
pub mod status;
mod topology;
pub mod up;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;

/// Longest lab name: the underlay side of node 64's veth is `<lab>n64`, and
/// interface names have at most 15 characters.
pub const MAX_NAME_LEN: usize = 12;
/// Most nodes a lab may have.
pub const MAX_NODES: u32 = 64;
/// The bridge of the underlay switch namespace.
pub const UNDERLAY_BRIDGE: &str = "underlay0";
/// The node namespaces' interface on the underlay.
pub const NODE_IFACE: &str = "eth0";
/// Port the agents reach the apiserver on, on the underlay bridge address.
pub const AGENT_API_PORT: u16 = 6443;

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Lab name: a DNS-1123 label of at most 12 characters, without "-node".
    #[arg(long, default_value = "podnet")]
    pub name: String,
    /// Number of nodes, 1 to 64 [default: 2]. On a running lab, a larger number adds nodes.
    #[arg(long)]
    pub nodes: Option<u32>,
    /// Overlay backend for cross-node pod traffic: vxlan | host-gw | udp [default: vxlan].
    #[arg(long)]
    pub backend: Option<Backend>,
    /// Service proxy mode: nftables | userspace [default: nftables].
    #[arg(long)]
    pub proxy_mode: Option<ProxyMode>,
    /// Where the apiserver keeps objects: embedded | etcd [default: embedded].
    #[arg(long)]
    pub store: Option<StoreKind>,
    /// The underlay subnet the nodes sit on (bridge on its first address,
    /// node i on the network address + 10 + i).
    #[arg(long)]
    pub underlay_cidr: Option<ipnet::Ipv4Net>,
    /// The range node pod subnets are allocated from [default: 10.244.0.0/16].
    #[arg(long)]
    pub cluster_cidr: Option<ipnet::Ipv4Net>,
    /// The range ClusterIPs are allocated from [default: 10.96.0.0/12].
    #[arg(long)]
    pub service_cidr: Option<ipnet::Ipv4Net>,
    /// The prefix length of each node's pod subnet, cut from the cluster range [default: 24].
    #[arg(long)]
    pub node_cidr_size: Option<u8>,
    /// The pod MTU on every node [default: the underlay's minus the backend's overhead].
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Masquerade pod traffic leaving the cluster CIDR (flannel's --ip-masq) [default: true].
    #[arg(long, action = clap::ArgAction::Set)]
    pub ip_masq: Option<bool>,
    /// vxlan: a plain route, without encapsulation, to nodes on the same L2 segment (all
    /// of a lab's nodes are).
    #[arg(long)]
    pub vxlan_direct_routing: bool,
    /// How long to wait for every node to be Ready, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    #[command(flatten)]
    pub dns: dns::DnsArgs,
}

/// The node network settings every agent of a lab gets.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct NetworkOptions {
    pub mtu: Option<u32>,
    pub ip_masq: bool,
    pub vxlan_direct_routing: bool,
}

impl Default for NetworkOptions {
    /// The agent's defaults (what labs made before these were recorded have).
    fn default() -> Self {
        NetworkOptions {
            mtu: None,
            ip_masq: true,
            vxlan_direct_routing: false,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Lab name.
    #[arg(long, default_value = "podnet")]
    pub name: String,
}

#[derive(clap::ValueEnum, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
#[value(rename_all = "kebab-case")]
pub enum Backend {
    Vxlan,
    HostGw,
    Udp,
}

#[derive(clap::ValueEnum, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyMode {
    Nftables,
    Userspace,
}

#[derive(clap::ValueEnum, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    Embedded,
    Etcd,
}

impl Backend {
    /// The overlay backend it names.
    pub fn kind(self) -> podnet_overlay::BackendKind {
        match self {
            Backend::Vxlan => podnet_overlay::BackendKind::Vxlan,
            Backend::HostGw => podnet_overlay::BackendKind::HostGw,
            Backend::Udp => podnet_overlay::BackendKind::Udp,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
            Backend::Udp => "udp",
        }
    }
}

impl ProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Nftables => "nftables",
            ProxyMode::Userspace => "userspace",
        }
    }
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Etcd => "etcd",
        }
    }
}

/// Checks a lab name. The name becomes part of namespace names
/// (`<lab>-node3`), interface names (`<lab>n3`) and directories.
pub fn validate_name(name: &str) -> Result<()> {
    let hint = "use lowercase letters, digits and '-', starting and ending with a letter or digit, e.g. --name lab1";
    if name.is_empty() {
        bail!("--name is empty: {hint}");
    }
    if name.len() > MAX_NAME_LEN {
        bail!(
            "--name {name:?} is {} characters long; a lab name has at most {MAX_NAME_LEN} (the underlay side of node i's link is called <name>n<i>, and interface names have at most 15 characters)",
            name.len()
        );
    }
    let label_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ends_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if !label_chars || !ends_ok {
        bail!("--name {name:?} is not a DNS-1123 label: {hint}");
    }
    if name.contains("-node") {
        bail!(
            "--name {name:?} contains \"-node\", which separates a lab's name from its node names (<name>-node1); pick another name"
        );
    }
    Ok(())
}

/// Where a lab keeps things.
#[derive(Debug, Clone)]
pub struct LabPaths {
    pub name: String,
    /// `/run/podnet/<lab>`: runtime state (processes, nodes' state dirs).
    pub run: PathBuf,
    /// `/var/lib/podnet/<lab>`: lab.json, kubeconfigs, logs, the store.
    pub lib: PathBuf,
}

pub const RUN_ROOT: &str = "/run/podnet";
pub const LIB_ROOT: &str = "/var/lib/podnet";

impl LabPaths {
    pub fn new(name: &str) -> LabPaths {
        LabPaths {
            name: name.to_string(),
            run: Path::new(RUN_ROOT).join(name),
            lib: Path::new(LIB_ROOT).join(name),
        }
    }
    pub fn lab_json(&self) -> PathBuf {
        self.lib.join("lab.json")
    }
    pub fn processes_json(&self) -> PathBuf {
        self.run.join("processes.json")
    }
    pub fn logs(&self) -> PathBuf {
        self.lib.join("logs")
    }
    pub fn log_of(&self, component: &str) -> PathBuf {
        self.logs().join(format!("{component}.log"))
    }
    pub fn apiserver_data(&self) -> PathBuf {
        self.lib.join("apiserver")
    }
    pub fn etcd_data(&self) -> PathBuf {
        self.lib.join("etcd")
    }
    /// The kubeconfig for users (loopback listener).
    pub fn kubeconfig(&self) -> PathBuf {
        self.lib.join("kubeconfig")
    }
    /// The kubeconfig for agents (the underlay listener, TLS and token).
    pub fn agent_kubeconfig(&self) -> PathBuf {
        self.lib.join("agent-kubeconfig")
    }
    /// `<lab>-underlay`.
    pub fn underlay_ns(&self) -> String {
        format!("{}-underlay", self.name)
    }
    /// `<lab>-node<i>`, i from 1: both the namespace and the Node name.
    pub fn node_name(&self, i: u32) -> String {
        format!("{}-node{i}", self.name)
    }
    /// The underlay side of node i's link, in the underlay namespace.
    pub fn switch_port(&self, i: u32) -> String {
        format!("{}n{i}", self.name)
    }
    pub fn node_state_dir(&self, node: &str) -> PathBuf {
        self.run.join("nodes").join(node)
    }
    pub fn node_log_dir(&self, node: &str) -> PathBuf {
        self.lib.join("nodes").join(node).join("logs")
    }
    /// The demo's record of its processes (`podnet lab demo --keep`).
    pub fn demo_pids(&self) -> PathBuf {
        self.run.join("demo.pids")
    }
    /// Whether `ns` is one of this lab's node namespaces (`<lab>-node<i>`).
    pub fn node_index(&self, ns: &str) -> Option<u32> {
        let rest = ns.strip_prefix(&self.name)?.strip_prefix("-node")?;
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        rest.parse().ok()
    }
    /// Whether `ns` belongs to a pod (or the demo) on one of this lab's
    /// nodes: `<lab>-node<i>-<anything>`.
    pub fn is_pod_ns(&self, ns: &str) -> bool {
        let Some(rest) = ns
            .strip_prefix(&self.name)
            .and_then(|r| r.strip_prefix("-node"))
        else {
            return false;
        };
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        digits > 0 && rest[digits..].starts_with('-') && rest.len() > digits + 1
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("podnet").is_ok());
        assert!(validate_name("t123a").is_ok());
        assert!(validate_name("abcdefghijkl").is_ok());
        assert!(validate_name("abcdefghijklm").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("Lab").is_err());
        assert!(validate_name("-lab").is_err());
        assert!(validate_name("lab-").is_err());
        assert!(validate_name("la_b").is_err());
        assert!(validate_name("a-node1").is_err());
    }

    #[test]
    fn namespaces_of_a_lab() {
        let p = LabPaths::new("lab");
        assert_eq!(p.node_index("lab-node3"), Some(3));
        assert_eq!(p.node_index("lab-node"), None);
        assert_eq!(p.node_index("lab-node3-x"), None);
        assert_eq!(p.node_index("lab2-node3"), None);
        assert!(p.is_pod_ns("lab-node1-pod-a"));
        assert!(!p.is_pod_ns("lab-node1"));
        assert!(!p.is_pod_ns("lab-node1-"));
        assert!(!p.is_pod_ns("lab-underlay"));
        assert!(!p.is_pod_ns("labx-node1-a"));
        assert_eq!(p.switch_port(64), "labn64");
    }
}
