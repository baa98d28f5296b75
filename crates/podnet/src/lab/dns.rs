//! The lab's cluster DNS, deployed as kubeadm deploys CoreDNS: the `kube-dns` Service in
//! `kube-system` at the tenth address of the service range (10.96.0.10 by default), in
//! front of DNS server pods (`podnet dns`, label `k8s-app: kube-dns`, spread over the
//! nodes, `dnsPolicy: Default` so their upstreams are the node's, ready once their
//! watches have listed), and every agent told the address and the domain as kubelet is
//! (`--cluster-dns`, `--cluster-domain`). Made through the API, so `podnet get svc -n
//! kube-system` shows them and the same objects would run on a real cluster.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use super::api::Api;
use super::state::LabState;

/// The DNS Service's namespace and name.
pub const NAMESPACE: &str = "kube-system";
pub const SERVICE: &str = "kube-dns";
/// The label that selects the DNS pods (CoreDNS's).
pub const APP_LABEL: &str = "kube-dns";

/// `lab up`'s DNS flags.
#[derive(Args, Debug, Clone, Default)]
pub struct DnsArgs {
    /// The cluster domain (kubelet's and the DNS server's) [default: cluster.local].
    #[arg(long)]
    pub cluster_domain: Option<String>,
    /// The kube-dns Service's address, pods' nameserver [default: the service range's
    /// tenth address, 10.96.0.10].
    #[arg(long)]
    pub cluster_dns: Option<Ipv4Addr>,
    /// Upstream resolvers of the DNS pods for names outside the cluster (repeatable;
    /// `none`: refuse them) [default: the node's resolv.conf, as dnsPolicy Default gives].
    #[arg(long)]
    pub dns_upstream: Vec<String>,
    /// DNS server pods behind kube-dns (0: no cluster DNS) [default: 2].
    #[arg(long)]
    pub dns_replicas: Option<u32>,
}

/// What a lab's DNS is (recorded in lab.json).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct DnsOptions {
    pub cluster_domain: String,
    pub cluster_dns: Ipv4Addr,
    #[serde(default)]
    pub upstreams: Vec<String>,
    pub replicas: u32,
}

impl Default for DnsOptions {
    /// Labs made before DNS: none.
    fn default() -> DnsOptions {
        DnsOptions {
            cluster_domain: "cluster.local".into(),
            cluster_dns: Ipv4Addr::new(10, 96, 0, 10),
            upstreams: Vec::new(),
            replicas: 0,
        }
    }
}

impl DnsOptions {
    /// The options of `lab up`'s flags, checked against the service range.
    pub fn from_args(args: &DnsArgs, service_cidr: ipnet::Ipv4Net) -> Result<DnsOptions> {
        let tenth = u32::from(service_cidr.network()) + 10;
        let cluster_dns = args.cluster_dns.unwrap_or(Ipv4Addr::from(tenth));
        if !service_cidr.contains(&cluster_dns) {
            bail!(
                "--cluster-dns {cluster_dns} is outside --service-cidr {service_cidr}: the kube-dns Service's address comes from the service range"
            );
        }
        let domain = args
            .cluster_domain
            .clone()
            .unwrap_or_else(|| "cluster.local".into());
        podnet_dns::ZoneConfig::new(&domain, 5)
            .map_err(|e| anyhow::anyhow!("--cluster-domain: {e}"))?;
        Ok(DnsOptions {
            cluster_domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            cluster_dns,
            upstreams: args.dns_upstream.clone(),
            replicas: args.dns_replicas.unwrap_or(2),
        })
    }

    pub fn enabled(&self) -> bool {
        self.replicas > 0
    }
}

/// kubelet's DNS flags for an agent of the lab.
pub fn agent_args(dns: &DnsOptions, cmd: &mut Command) {
    cmd.arg("--cluster-domain").arg(&dns.cluster_domain);
    if dns.enabled() {
        cmd.arg("--cluster-dns").arg(dns.cluster_dns.to_string());
    }
}

/// The kube-dns Service.
pub fn service(dns: &DnsOptions) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE,
            "labels": {"k8s-app": APP_LABEL, "kubernetes.io/name": "podnet-dns", "kubernetes.io/cluster-service": "true"}},
        "spec": {
            "selector": {"k8s-app": APP_LABEL},
            "clusterIP": dns.cluster_dns.to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    })
}

/// DNS server pod `i` (0-based) on `node`.
pub fn pod(dns: &DnsOptions, i: u32, node: &str, podnet: &Path, kubeconfig: &Path) -> Value {
    let mut command = vec![
        podnet.display().to_string(),
        "dns".into(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--cluster-domain".into(),
        dns.cluster_domain.clone(),
    ];
    for u in &dns.upstreams {
        command.push("--upstream".into());
        command.push(u.clone());
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{SERVICE}-{i}"), "namespace": NAMESPACE,
            "labels": {"k8s-app": APP_LABEL}},
        "spec": {
            "nodeName": node,
            "dnsPolicy": "Default",
            "containers": [{
                "name": "dns",
                "image": "podnet",
                "command": command,
                "ports": [
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                    {"name": "health", "containerPort": 8181, "protocol": "TCP"},
                ],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 1, "failureThreshold": 1},
                "livenessProbe": {"httpGet": {"path": "/health", "port": 8181}, "periodSeconds": 10, "failureThreshold": 5},
            }],
        },
    })
}

/// Creates the Service and the pods (what exists already is kept).
pub fn deploy(api: &Api, state: &LabState, podnet: &Path) -> Result<String> {
    let dns = &state.dns;
    if !dns.enabled() {
        return Ok("off (--dns-replicas 0)".into());
    }
    api.create(
        &format!("/api/v1/namespaces/{NAMESPACE}/services"),
        &service(dns),
    )
    .context("create the kube-dns Service")?;
    for i in 0..dns.replicas {
        let node = &state.nodes[i as usize % state.nodes.len()].name;
        api.create(
            &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
            &pod(dns, i, node, podnet, &state.apiserver.agent_kubeconfig),
        )
        .with_context(|| format!("create the DNS pod {SERVICE}-{i}"))?;
    }
    Ok(format!(
        "{NAMESPACE}/{SERVICE} at {}, {} pod{} of podnet dns, domain {}",
        dns.cluster_dns,
        dns.replicas,
        if dns.replicas == 1 { "" } else { "s" },
        dns.cluster_domain
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tenth_address_of_the_service_range() {
        let d =
            DnsOptions::from_args(&DnsArgs::default(), "10.96.0.0/12".parse().unwrap()).unwrap();
        assert_eq!(d.cluster_dns, Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(d.cluster_domain, "cluster.local");
        assert_eq!(d.replicas, 2);
        let d =
            DnsOptions::from_args(&DnsArgs::default(), "10.100.0.0/16".parse().unwrap()).unwrap();
        assert_eq!(d.cluster_dns, Ipv4Addr::new(10, 100, 0, 10));
        let outside = DnsArgs {
            cluster_dns: Some(Ipv4Addr::new(10, 0, 0, 10)),
            ..DnsArgs::default()
        };
        assert!(DnsOptions::from_args(&outside, "10.96.0.0/12".parse().unwrap()).is_err());
        let bad = DnsArgs {
            cluster_domain: Some("bad..domain".into()),
            ..DnsArgs::default()
        };
        assert!(DnsOptions::from_args(&bad, "10.96.0.0/12".parse().unwrap()).is_err());
    }
}
