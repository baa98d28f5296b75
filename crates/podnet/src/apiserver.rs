//! `podnet apiserver`: runs the Kubernetes-compatible API server until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use podnet_apiserver::alloc::AllocatorConfig;
use podnet_apiserver::controllers::ControllerConfig;
use podnet_apiserver::server::{ApiServer, Config, ExtraListener, StoreConfig};
use podnet_apiserver::tls::{TlsConfig, TlsMode};
use podnet_apiserver::versions::ServedVersions;

#[derive(Args, Debug)]
pub struct ApiserverArgs {
    /// Address to listen on. Loopback is served plain HTTP without authentication (unless
    /// --tls); any other address is served TLS and requires the bearer token.
    #[arg(long, default_value = "127.0.0.1:6443")]
    bind: SocketAddr,
    /// Serve TLS with a bearer token on loopback too.
    #[arg(long)]
    tls: bool,
    /// Serving certificate (PEM, leaf first) instead of the one generated under
    /// DATA_DIR/pki; with --tls-key-file.
    #[arg(long, requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert-file.
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// The CA (PEM) that signed --tls-cert-file, written into the kubeconfig (without it
    /// clients use their system roots).
    #[arg(long, requires = "tls_cert_file")]
    tls_ca_file: Option<PathBuf>,
    /// Extra name (DNS name or IP address) for the generated serving certificate; repeatable.
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,
    /// File holding the bearer token, instead of the one generated into DATA_DIR/token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Also serve on this inherited listening socket (e.g. one the lab opened in its
    /// underlay namespace), with TLS and the token; repeatable.
    #[arg(long = "listen-fd", value_name = "FD")]
    listen_fds: Vec<i32>,
    /// Where to write the kubeconfig for the matching --listen-fd.
    #[arg(long = "listen-fd-kubeconfig", value_name = "PATH")]
    listen_fd_kubeconfigs: Vec<PathBuf>,
    /// Directory for the embedded store and the kubeconfig written for clients.
    #[arg(long)]
    data_dir: PathBuf,
    /// embedded | memory | etcd://HOST:PORT[,HOST:PORT...]
    #[arg(long, default_value = "embedded")]
    store: String,
    /// The range node pod subnets are allocated from.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: ipnet::IpNet,
    /// Prefix length of each node's pod subnet.
    #[arg(long, default_value_t = 24)]
    node_cidr_size: u8,
    /// The range ClusterIPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: ipnet::IpNet,
    /// NodePorts, as FIRST-LAST.
    #[arg(long, default_value = "30000-32767")]
    nodeport_range: String,
    /// Addresses handed to LoadBalancer Services (none: they stay pending).
    #[arg(long)]
    lb_pool: Option<ipnet::IpNet>,
    /// How long a node may miss Lease renewals before it is marked NotReady.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_seconds: u64,
    /// API group versions switched off, as kube-apiserver's: GROUP/VERSION=false, comma
    /// separated (e.g. discovery.k8s.io/v1=false to stand in for a cluster older than 1.21).
    #[arg(long, value_name = "GROUP/VERSION=BOOL,...", default_value = "")]
    runtime_config: String,
}

pub fn run(args: ApiserverArgs) -> anyhow::Result<()> {
    let config = config(&args)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = ApiServer::start(config).await?;
        eprintln!(
            "podnet apiserver: serving on {}; export KUBECONFIG={}",
            server.url(),
            server.kubeconfig_path().display()
        );
        wait_for_stop_signal().await?;
        server.stop().await;
        Ok(())
    })
}

fn config(args: &ApiserverArgs) -> anyhow::Result<Config> {
    let store = StoreConfig::parse(&args.store).map_err(anyhow::Error::msg)?;
    Ok(Config {
        bind: args.bind,
        data_dir: args.data_dir.clone(),
        store,
        allocators: AllocatorConfig {
            service_cidr: args.service_cidr,
            nodeport_range: parse_port_range(&args.nodeport_range)?,
            cluster_cidr: args.cluster_cidr,
            node_cidr_size: args.node_cidr_size,
            lb_pool: args.lb_pool,
        },
        controllers: ControllerConfig {
            node_monitor_grace: Duration::from_secs(args.node_monitor_grace_seconds),
            ..ControllerConfig::default()
        },
        bookmark_interval: Duration::from_secs(60),
        tls: TlsConfig {
            mode: if args.tls {
                TlsMode::Always
            } else {
                TlsMode::Auto
            },
            cert_file: args.tls_cert_file.clone(),
            key_file: args.tls_key_file.clone(),
            ca_file: args.tls_ca_file.clone(),
            token_file: args.token_file.clone(),
            extra_sans: args.tls_sans.clone(),
        },
        extra_listeners: extra_listeners(args)?,
        versions: ServedVersions::from_runtime_config(&args.runtime_config)
            .map_err(anyhow::Error::msg)?,
    })
}

/// `--listen-fd FD` paired, in order, with `--listen-fd-kubeconfig PATH`.
fn extra_listeners(args: &ApiserverArgs) -> anyhow::Result<Vec<ExtraListener>> {
    if args.listen_fds.len() != args.listen_fd_kubeconfigs.len() {
        anyhow::bail!(
            "give one --listen-fd-kubeconfig PATH for each --listen-fd FD ({} and {} given)",
            args.listen_fd_kubeconfigs.len(),
            args.listen_fds.len()
        );
    }
    Ok(args
        .listen_fds
        .iter()
        .zip(&args.listen_fd_kubeconfigs)
        .map(|(fd, path)| ExtraListener {
            fd: *fd,
            kubeconfig: path.clone(),
        })
        .collect())
}

fn parse_port_range(s: &str) -> anyhow::Result<std::ops::RangeInclusive<u16>> {
    let bad = || anyhow::anyhow!("--nodeport-range {s:?}: expected FIRST-LAST, e.g. 30000-32767");
    let (first, last) = s.split_once('-').ok_or_else(bad)?;
    let first: u16 = first.trim().parse().map_err(|_| bad())?;
    let last: u16 = last.trim().parse().map_err(|_| bad())?;
    Ok(first..=last)
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
