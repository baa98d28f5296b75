//! `podnet agent`: the node agent, in whatever network namespace it is started in, until
//! SIGTERM or SIGINT. Pods keep running when it stops; it adopts them when started again.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use podnet_agent::agent::{
    self, AgentConfig, DEFAULT_CLUSTER_CIDR, DEFAULT_CNI_CONF_DIR, DEFAULT_SUBNET_FILE,
};
use podnet_agent::node::NodeTimings;

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
}

fn config(args: AgentArgs) -> anyhow::Result<AgentConfig> {
    if args.cluster_cidr.trunc() != args.cluster_cidr {
        anyhow::bail!(
            "--cluster-cidr {} has host bits set: did you mean {}?",
            args.cluster_cidr,
            args.cluster_cidr.trunc()
        );
    }
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
        subnet_file: args.subnet_file,
        timings: NodeTimings::default(),
    })
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
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
