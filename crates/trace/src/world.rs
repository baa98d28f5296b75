//! What a trace knows of the cluster: its nodes and pods with the kernel state of each
//! (read by the caller: from a lab's namespaces, or served by each node's agent), and what
//! a trace starts from and goes to.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::snapshot::Snapshot;

/// A node and its namespace's state.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub name: String,
    pub ip: Ipv4Addr,
    pub pod_cidr: Option<Ipv4Net>,
    pub state: Snapshot,
}

/// A pod, its namespace's state, and what listens in it.
#[derive(Debug, Clone)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub node: String,
    pub state: Snapshot,
    pub listening: Vec<Listener>,
}

/// A socket bound in a pod: TCP listening, or UDP bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub proto: u8,
    pub addr: Ipv4Addr,
    pub port: u16,
}

/// A Service, for naming what a ClusterIP or NodePort is.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    pub cluster_ip: Option<Ipv4Addr>,
}

/// Everything a trace reads.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub nodes: Vec<NodeView>,
    pub pods: Vec<PodView>,
    pub services: Vec<ServiceView>,
}

impl World {
    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn node_with_ip(&self, ip: Ipv4Addr) -> Option<&NodeView> {
        self.nodes
            .iter()
            .find(|n| n.ip == ip || n.state.is_local(ip) && !ip.is_loopback())
    }

    pub fn pod_with_ip(&self, ip: Ipv4Addr) -> Option<&PodView> {
        self.pods.iter().find(|p| p.ip == ip)
    }

    /// The node whose pod subnet holds `ip`.
    pub fn node_of_subnet(&self, ip: Ipv4Addr) -> Option<&NodeView> {
        self.nodes
            .iter()
            .find(|n| n.pod_cidr.is_some_and(|c| c.contains(&ip)))
    }

    /// What `ip` is, for people: a pod, a Service, a node, or just the address.
    pub fn name_of(&self, ip: Ipv4Addr) -> String {
        if let Some(p) = self.pod_with_ip(ip) {
            return format!("pod {}/{} ({ip})", p.namespace, p.name);
        }
        if let Some(s) = self.services.iter().find(|s| s.cluster_ip == Some(ip)) {
            return format!("service {}/{} ({ip})", s.namespace, s.name);
        }
        if let Some(n) = self.nodes.iter().find(|n| n.ip == ip) {
            return format!("node {} ({ip})", n.name);
        }
        ip.to_string()
    }
}

/// Where a packet starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Inside a pod (`namespace/name`).
    Pod { namespace: String, name: String },
    /// From outside the cluster, arriving at a node's underlay interface.
    Outside(Ipv4Addr),
}

/// What a packet is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
}
