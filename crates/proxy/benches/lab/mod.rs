//! What the benchmarks share: namespaces removed on drop, and synthetic services.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;

use podnet_kernel::{NetNs, OwnedNetNs};
use podnet_proxy::model::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceState};

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Named namespaces `pn-pxb-<pid>-<tag>-<role>`, each deleted when dropped.
pub struct Namespaces {
    pub prefix: String,
    pub handles: BTreeMap<String, OwnedNetNs>,
}

impl Namespaces {
    pub fn new(tag: &str, roles: &[&str]) -> Namespaces {
        let prefix = format!("pn-pxb-{}-{tag}", std::process::id());
        let mut me = Namespaces {
            prefix,
            handles: BTreeMap::new(),
        };
        for r in roles {
            let name = me.name(r);
            let _ = NetNs::delete(&name);
            let ns = OwnedNetNs::create(&name).expect("create bench namespace");
            me.handles.insert(r.to_string(), ns);
        }
        me
    }

    pub fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    pub fn ns(&self, role: &str) -> &NetNs {
        &self.handles[role]
    }

    /// The node (`cni0` 10.244.1.1/24, forwarding on) and pods `pod-<i>` at 10.244.1.(2+i).
    pub fn node_with_pods(tag: &str, pods: usize) -> Namespaces {
        let mut roles = vec!["node".to_string()];
        roles.extend((0..pods).map(|i| format!("pod-{i}")));
        let refs: Vec<&str> = roles.iter().map(String::as_str).collect();
        let me = Namespaces::new(tag, &refs);
        let node = me.name("node");
        ip(&["-n", &node, "link", "set", "lo", "up"]);
        ip(&["-n", &node, "link", "add", "cni0", "type", "bridge"]);
        ip(&["-n", &node, "addr", "add", "10.244.1.1/24", "dev", "cni0"]);
        ip(&["-n", &node, "link", "set", "cni0", "up"]);
        // The node's own connections to ClusterIPs need a route to leave by (DNAT in the
        // output hook then redirects them), as a real node's default route provides.
        ip(&["-n", &node, "route", "add", "10.96.0.0/12", "dev", "cni0"]);
        podnet_kernel::sysctl::write(me.ns("node"), "net.ipv4.ip_forward", "1").unwrap();
        for i in 0..pods {
            let pod = me.name(&format!("pod-{i}"));
            let host = format!("veth{i}");
            ip(&["-n", &pod, "link", "set", "lo", "up"]);
            ip(&[
                "-n", &node, "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns",
                &pod,
            ]);
            ip(&["-n", &node, "link", "set", &host, "master", "cni0"]);
            ip(&["-n", &node, "link", "set", &host, "up"]);
            ip(&[
                "-n",
                &pod,
                "addr",
                "add",
                &format!("{}/24", pod_ip(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &pod, "link", "set", "eth0", "up"]);
            ip(&["-n", &pod, "route", "add", "default", "via", "10.244.1.1"]);
        }
        me
    }
}

pub fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 2 + i as u8)
}

/// How many endpoints (pods) a synthetic node hosts: `PODNET_BENCH_PODS_PER_NODE`,
/// default 0 = the endpoints are spread over three nodes (node-0 hosts a third of them,
/// ~33,000 at 10,000 × 10: far beyond a real node). 110 is Kubernetes' default maximum of
/// pods per node.
pub fn pods_per_node() -> usize {
    env_usize("PODNET_BENCH_PODS_PER_NODE", 0)
}

/// Service `i` of a synthetic set: ClusterIP 10.96.x.y, port 80, `eps` endpoints at
/// distinct addresses (10.100.0.0/14, never routed), on nodes as [`pods_per_node`] says.
pub fn synthetic(i: usize, eps: usize) -> ServiceState {
    let per_node = pods_per_node();
    let n = (i + 1) as u32;
    let cluster_ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + n);
    let endpoints = (0..eps)
        .map(|j| {
            let k = (i * eps + j) as u32;
            Endpoint {
                ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + k),
                port: 8080,
                node_name: Some(format!(
                    "node-{}",
                    (k as usize).checked_div(per_node).unwrap_or(j % 3)
                )),
                ready: true,
                serving: true,
                terminating: false,
            }
        })
        .collect();
    ServiceState {
        port: ServicePort::cluster_ip(
            ServicePortName {
                namespace: "bench".into(),
                name: format!("svc-{i}"),
                port: "http".into(),
                protocol: Protocol::Tcp,
            },
            cluster_ip,
            80,
        ),
        endpoints,
    }
}

pub fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

pub fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn percentile_ms(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx]
}
