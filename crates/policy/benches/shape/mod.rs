//! A synthetic cluster of realistic shape, shared by the NetworkPolicy benchmarks (the
//! policy crate's and the lab bench in `crates/podnet/benches/policy.rs`): namespaces with
//! team/env labels, pods of a few apps and tiers with named container ports, and per
//! namespace a cycle of ten policy shapes as clusters write them (default deny, same
//! namespace, from an ingress namespace, tier to tier over a named port, namespace +
//! pod selectors together, monitoring over a named port, an ipBlock with an except,
//! egress to DNS, to an ipBlock and to a named port, matchExpressions with an endPort
//! range, a team's namespaces by label).
//!
//! Everything is built as the API's objects (`Namespace`, `Pod` with status, and
//! `NetworkPolicy`), so the benches read them the way the agent does.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

/// How big the cluster is and where its pods live.
#[derive(Debug, Clone)]
pub struct Shape {
    pub namespaces: usize,
    pub pods: usize,
    pub policies: usize,
    /// Node names; pod `g` (counted over the whole cluster) runs on `nodes[g % len]`.
    pub nodes: Vec<String>,
    /// The /24 of node `k` is `first_subnet + k` (its pods from .2): 10.244.0.0 for node 0.
    pub first_subnet: Ipv4Addr,
}

const TIERS: [&str; 3] = ["web", "api", "db"];
const ENVS: [&str; 3] = ["prod", "staging", "dev"];

impl Shape {
    /// `namespaces` × (`pods`/`namespaces`) pods × (`policies`/`namespaces`) policies on
    /// `nodes` nodes called `node-<k>`.
    pub fn new(namespaces: usize, pods: usize, policies: usize, nodes: usize) -> Shape {
        Shape {
            namespaces: namespaces.max(1),
            pods,
            policies,
            nodes: (0..nodes.max(1)).map(|k| format!("node-{k}")).collect(),
            first_subnet: Ipv4Addr::new(10, 244, 0, 0),
        }
    }

    pub fn namespace_name(&self, i: usize) -> String {
        format!("ns-{i:03}")
    }

    /// Namespace `i`: team `t<i % 10>`, an env; ns-000 is the monitoring namespace and
    /// ns-001 the ingress controllers'.
    pub fn namespace(&self, i: usize) -> Value {
        let name = self.namespace_name(i);
        let mut labels = json!({
            "kubernetes.io/metadata.name": name,
            "team": format!("t{}", i % 10),
            "env": ENVS[i % 3],
        });
        match i {
            0 => labels["purpose"] = json!("monitoring"),
            1 => labels["purpose"] = json!("ingress"),
            _ => {}
        }
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    }

    /// The address of pod `g`: its node's /24, from .2 on.
    pub fn pod_ip(&self, g: usize) -> Ipv4Addr {
        let nodes = self.nodes.len();
        let (node, idx) = (g % nodes, g / nodes);
        assert!(idx < 240, "more than 240 pods per node: give more nodes");
        Ipv4Addr::from(u32::from(self.first_subnet) + (node as u32) * 256 + 2 + idx as u32)
    }

    /// Pod `g` (pods are dealt to namespaces in turn): app `app-<j % 5>`, a tier, a
    /// version, ports `http` 8080 and `metrics` 9090; db pods name `db` 5432, every fifth
    /// pod `grpc` 9000, and the pods of ns-002's app-0 serve `dns` on 53 UDP and TCP.
    /// Without status when `ip` is false (what is created; the status comes after).
    pub fn pod(&self, g: usize, with_status: bool) -> Value {
        let ns = g % self.namespaces;
        let j = g / self.namespaces;
        let tier = TIERS[j % 3];
        let app = format!("app-{}", j % 5);
        let mut ports = vec![
            json!({"name": "http", "containerPort": 8080, "protocol": "TCP"}),
            json!({"name": "metrics", "containerPort": 9090}),
        ];
        if tier == "db" {
            ports.push(json!({"name": "db", "containerPort": 5432}));
        }
        if j % 5 == 4 {
            ports.push(json!({"name": "grpc", "containerPort": 9000}));
        }
        if ns == 2 && j.is_multiple_of(5) {
            ports.push(json!({"name": "dns", "containerPort": 53, "protocol": "UDP"}));
            ports.push(json!({"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}));
        }
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": format!("{app}-{j}"),
                "namespace": self.namespace_name(ns),
                "labels": {"app": app, "tier": tier, "version": format!("v{}", j % 2),
                           "pod-template-hash": format!("{:08x}", g * 2_654_435_761 % 0xffff_ffff)},
            },
            "spec": {
                "nodeName": self.nodes[g % self.nodes.len()],
                "containers": [{"name": "main", "image": "example/app", "ports": ports}],
            },
        });
        if with_status {
            pod["status"] = self.pod_status(g);
        }
        pod
    }

    pub fn pod_status(&self, g: usize) -> Value {
        json!({"phase": "Running", "podIP": self.pod_ip(g).to_string(),
               "podIPs": [{"ip": self.pod_ip(g).to_string()}]})
    }

    /// Policy `q` of the cluster: namespace `q % namespaces`, shape `(q / namespaces) % 10`.
    pub fn policy(&self, q: usize) -> Value {
        let i = q % self.namespaces;
        let round = q / self.namespaces;
        let ns = self.namespace_name(i);
        let team = format!("t{}", i % 10);
        let (name, spec) = match round % 10 {
            0 => (
                "default-deny",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            ),
            1 => (
                "allow-same-namespace",
                json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
            ),
            2 => (
                "web-from-ingress",
                json!({"podSelector": {"matchLabels": {"tier": "web"}},
                       "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"purpose": "ingress"}}}],
                                    "ports": [{"port": 8080}, {"port": 8443}]}]}),
            ),
            3 => (
                "api-from-web",
                json!({"podSelector": {"matchLabels": {"tier": "api"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "web"}}}],
                                    "ports": [{"port": "http"}]}]}),
            ),
            4 => (
                "db-from-team-api",
                json!({"podSelector": {"matchLabels": {"tier": "db"}},
                       "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": team}},
                                              "podSelector": {"matchLabels": {"tier": "api"}}}],
                                    "ports": [{"port": 5432, "protocol": "TCP"}]}]}),
            ),
            5 => (
                "metrics-from-monitoring",
                json!({"podSelector": {},
                       "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"purpose": "monitoring"}},
                                              "podSelector": {"matchLabels": {"app": "app-0"}}}],
                                    "ports": [{"port": "metrics"}]}]}),
            ),
            6 => (
                "from-office",
                json!({"podSelector": {"matchLabels": {"app": format!("app-{}", i % 5)}},
                       "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/16",
                                                          "except": ["192.168.100.0/24", "192.168.200.0/24"]}}],
                                    "ports": [{"port": 443}]}]}),
            ),
            7 => (
                "egress",
                json!({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]},
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ns-002"}},
                             "podSelector": {"matchLabels": {"app": "app-0"}}}],
                     "ports": [{"port": "dns", "protocol": "UDP"}, {"port": "dns-tcp"}]},
                    {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16", "10.96.0.0/12"]}}],
                     "ports": [{"port": 443}]},
                    {"to": [{"podSelector": {}}]},
                    {"to": [{"namespaceSelector": {"matchLabels": {"team": team}}}],
                     "ports": [{"port": "http"}]},
                ]}),
            ),
            8 => (
                "expressions",
                json!({"podSelector": {"matchExpressions": [
                           {"key": "tier", "operator": "In", "values": ["web", "api"]},
                           {"key": "version", "operator": "NotIn", "values": ["v0"]}]},
                       "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                                                 {"key": "env", "operator": "In", "values": ["prod", "staging"]}]}}],
                                    "ports": [{"port": 8080, "endPort": 8090}]}]}),
            ),
            _ => (
                "from-next-team",
                json!({"podSelector": {"matchLabels": {"app": format!("app-{}", i % 5)}},
                       "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", (i + 1) % 10)}},
                                              "podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}}],
                                    "ports": [{"port": "grpc"}, {"port": 9000, "protocol": "UDP"}]}]}),
            ),
        };
        let name = if round < 10 {
            name.to_string()
        } else {
            format!("{name}-{}", round / 10)
        };
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": name, "namespace": ns}, "spec": spec})
    }

    pub fn typed_namespaces(&self) -> Vec<Namespace> {
        (0..self.namespaces)
            .map(|i| serde_json::from_value(self.namespace(i)).expect("namespace"))
            .collect()
    }

    pub fn typed_pods(&self) -> Vec<Pod> {
        (0..self.pods)
            .map(|g| serde_json::from_value(self.pod(g, true)).expect("pod"))
            .collect()
    }

    pub fn typed_policies(&self) -> Vec<NetworkPolicy> {
        (0..self.policies)
            .map(|q| serde_json::from_value(self.policy(q)).expect("policy"))
            .collect()
    }
}

pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: give a whole number")),
        Err(_) => default,
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// The calling process's resident set (VmRSS) and its peak (VmHWM), in MiB.
pub fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}
