//! `podnet agent`: the node agent, in whatever network namespace it is started in, until
//! SIGTERM or SIGINT. Pods keep running when it stops; it adopts them when started again.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use podnet_agent::agent::{
    self, AgentConfig, DEFAULT_CLUSTER_CIDR, DEFAULT_CNI_CONF_DIR, DEFAULT_SUBNET_FILE,
};
use podnet_agent::node::NodeTimings;
use podnet_agent::node::network::OverlaySettings;
use podnet_agent::policy::PolicySettings;
use podnet_agent::proxy::ProxySettings;
use podnet_overlay::{BackendKind, DEFAULT_UDP_PORT, VxlanOptions};
use podnet_proxy::ProxyMode;

/// `--proxy-mode`: how Services are implemented on this node.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyModeArg {
    /// In the kernel, with nftables (today's kube-proxy).
    Nftables,
    /// The article's mode: a local port per service port and the KUBE-PORTALS-*/KUBE-NODEPORT-* chains.
    Userspace,
    /// No service proxy on this node (another one runs).
    None,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The Node this agent registers and runs pods for.
    #[arg(long)]
    node_name: String,
    /// The kubeconfig to reach the API server with (its current context).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The node's InternalIP [default: the first global IPv4 address of this namespace].
    #[arg(long)]
    node_ip: Option<Ipv4Addr>,
    /// The range node pod subnets come from (the apiserver's --cluster-cidr).
    #[arg(long, default_value = DEFAULT_CLUSTER_CIDR)]
    cluster_cidr: ipnet::Ipv4Net,
    /// Where podnet-cni is [default: the directory of this podnet binary].
    #[arg(long)]
    cni_bin_dir: Option<PathBuf>,
    /// Where the CNI conflist is written.
    #[arg(long, default_value = DEFAULT_CNI_CONF_DIR)]
    cni_conf_dir: PathBuf,
    /// The agent's state (pods, IPAM) [default: /run/podnet/agent/NODE].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Container logs [default: /var/lib/podnet/agent/NODE/logs].
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// flannel's subnet.env, written for the CNI plugin.
    #[arg(long, default_value = DEFAULT_SUBNET_FILE)]
    subnet_file: PathBuf,
    /// The cluster DNS Service's address, the nameserver of ClusterFirst pods (kubelet's
    /// --cluster-dns; repeatable) [default: none, pods use --resolv-conf's].
    #[arg(long)]
    cluster_dns: Vec<std::net::IpAddr>,
    /// The cluster domain in pods' search path (kubelet's --cluster-domain).
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The resolv.conf dnsPolicy: Default pods get (kubelet's --resolv-conf).
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// How pod traffic crosses nodes: vxlan | host-gw | udp.
    #[arg(long, default_value = "vxlan")]
    backend: BackendKind,
    /// vxlan: the VXLAN network identifier (the device is podnet.<VNI>).
    #[arg(long, default_value_t = 1)]
    vxlan_vni: u32,
    /// vxlan: the UDP port of the encapsulation.
    #[arg(long, default_value_t = 8472)]
    vxlan_port: u16,
    /// vxlan: a plain route, no encapsulation, to peers on this node's L2 segment.
    #[arg(long, default_value_t = false)]
    vxlan_direct_routing: bool,
    /// udp: the UDP port the forwarder listens on and sends to.
    #[arg(long, default_value_t = DEFAULT_UDP_PORT)]
    udp_port: u16,
    /// The pod MTU [default: the node IP's interface MTU minus the backend's overhead].
    #[arg(long)]
    mtu: Option<u32>,
    /// Masquerade pod traffic to destinations outside the cluster CIDR.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ip_masq: bool,
    /// Seconds between full passes of the node network (repairs hand-made changes).
    #[arg(long, default_value_t = 5)]
    network_resync: u64,
    /// How Services are implemented on this node.
    #[arg(long, value_enum, default_value = "nftables")]
    proxy_mode: ProxyModeArg,
    /// The range ClusterIPs come from (the apiserver's --service-cidr): traffic to an
    /// unallocated address in it is rejected.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: ipnet::Ipv4Net,
    /// Seconds between full rewrites of the service rules even without a change.
    #[arg(long, default_value_t = 900)]
    proxy_sync_period: u64,
    /// Enforce NetworkPolicy on this node (off: policies are left to another engine).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    network_policy: bool,
    /// The NFLOG group packets a NetworkPolicy refuses are logged to.
    #[arg(long, default_value_t = 100)]
    policy_nflog_group: u16,
    /// Where Prometheus metrics are served (GET /metrics, plain HTTP; kube-proxy's port), in
    /// this network namespace; `off`: not served.
    #[arg(long, default_value = "127.0.0.1:10249", value_parser = metrics_bind)]
    metrics_bind: MetricsBind,
}

/// `--metrics-bind`: an address, or none.
#[derive(Debug, Clone, Copy)]
struct MetricsBind(Option<SocketAddr>);

fn metrics_bind(s: &str) -> Result<MetricsBind, String> {
    if s.is_empty() || s == "off" {
        return Ok(MetricsBind(None));
    }
    s.parse()
        .map(|a| MetricsBind(Some(a)))
        .map_err(|_| format!("{s:?} is not an address and port (e.g. 127.0.0.1:10249), nor off"))
}

fn proxy_settings(args: &AgentArgs) -> anyhow::Result<Option<ProxySettings>> {
    let mode = match args.proxy_mode {
        ProxyModeArg::Nftables => ProxyMode::Nftables,
        ProxyModeArg::Userspace => ProxyMode::Userspace,
        ProxyModeArg::None => return Ok(None),
    };
    if args.service_cidr.trunc() != args.service_cidr {
        anyhow::bail!(
            "--service-cidr {} has host bits set: did you mean {}?",
            args.service_cidr,
            args.service_cidr.trunc()
        );
    }
    if podnet_api::net::overlaps(&args.service_cidr, &args.cluster_cidr) {
        anyhow::bail!(
            "--service-cidr {} overlaps --cluster-cidr {}: Service and pod addresses must be apart",
            args.service_cidr,
            args.cluster_cidr
        );
    }
    if args.proxy_sync_period == 0 {
        anyhow::bail!("--proxy-sync-period 0: give it at least 1 second");
    }
    Ok(Some(ProxySettings {
        mode,
        service_cidr: Some(args.service_cidr),
        sync_period: std::time::Duration::from_secs(args.proxy_sync_period),
    }))
}

fn config(args: AgentArgs) -> anyhow::Result<AgentConfig> {
    if args.cluster_cidr.trunc() != args.cluster_cidr {
        anyhow::bail!(
            "--cluster-cidr {} has host bits set: did you mean {}?",
            args.cluster_cidr,
            args.cluster_cidr.trunc()
        );
    }
    if args.vxlan_vni == 0 || args.vxlan_vni > 0x00ff_ffff {
        anyhow::bail!("--vxlan-vni {}: a VNI is 1 to 16777215", args.vxlan_vni);
    }
    if let Some(mtu) = args.mtu
        && !(576..=65535).contains(&mtu)
    {
        anyhow::bail!("--mtu {mtu}: an IPv4 pod MTU is 576 to 65535");
    }
    if args.network_resync == 0 {
        anyhow::bail!("--network-resync 0: give it at least 1 second");
    }
    let proxy = proxy_settings(&args)?;
    let podnet_bin = std::env::current_exe()
        .context("finding the podnet binary (for pause and sandbox exec)")?;
    let cni_bin_dir = match args.cni_bin_dir {
        Some(dir) => dir,
        None => podnet_bin.parent().map(PathBuf::from).with_context(|| {
            format!(
                "{} has no directory to find podnet-cni in: pass --cni-bin-dir",
                podnet_bin.display()
            )
        })?,
    };
    let state_dir = args
        .state_dir
        .unwrap_or_else(|| agent::default_state_dir(&args.node_name));
    let log_dir = args
        .log_dir
        .unwrap_or_else(|| agent::default_log_dir(&args.node_name));
    Ok(AgentConfig {
        node_name: args.node_name,
        kubeconfig: args.kubeconfig,
        node_ip: args.node_ip,
        cluster_cidr: args.cluster_cidr,
        podnet_bin,
        cni_bin_dir,
        cni_conf_dir: args.cni_conf_dir,
        state_dir,
        log_dir,
        pod_dns: podnet_agent::pods::dns::PodDns {
            cluster_dns: args.cluster_dns,
            cluster_domain: args.cluster_domain,
            resolv_conf: args.resolv_conf,
        },
        subnet_file: args.subnet_file,
        timings: NodeTimings {
            network_resync: std::time::Duration::from_secs(args.network_resync),
            ..NodeTimings::default()
        },
        overlay: OverlaySettings {
            backend: args.backend,
            vxlan: VxlanOptions {
                vni: args.vxlan_vni,
                port: args.vxlan_port,
                direct_routing: args.vxlan_direct_routing,
            },
            udp_port: args.udp_port,
            mtu_override: args.mtu,
            ip_masq: args.ip_masq,
        },
        proxy,
        policy: args.network_policy.then(|| PolicySettings {
            log_group: args.policy_nflog_group,
            ..PolicySettings::default()
        }),
        metrics_bind: args.metrics_bind.0,
    })
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    crate::preflight::agent(args.backend)?;
    let config = config(args)?;
    let node = config.node_name.clone();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let agent = agent::run(config, stop_rx);
        tokio::pin!(agent);
        tokio::select! {
            result = &mut agent => return result.with_context(|| format!("agent of node {node}")),
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop_tx.send(true);
        agent.await.with_context(|| format!("agent of node {node}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_bind_is_an_address_or_off() {
        let on = metrics_bind("0.0.0.0:9100").map(|m| m.0);
        assert_eq!(on, Ok(Some("0.0.0.0:9100".parse().expect("an address"))));
        assert_eq!(metrics_bind("off").map(|m| m.0), Ok(None));
        assert_eq!(metrics_bind("").map(|m| m.0), Ok(None));
        let err = metrics_bind("10249").err().unwrap_or_default();
        assert!(err.contains("e.g. 127.0.0.1:10249"), "{err}");
    }
}
