//! `podnet dns`: the cluster DNS server, as CoreDNS runs behind the `kube-dns` Service —
//! the cluster zone answered from watches of the API, other names forwarded to the
//! upstreams of `/etc/resolv.conf` (the pod's own: a DNS pod runs with `dnsPolicy:
//! Default`, so that is the node's). Runs until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use podnet_dns::{Forwarder, PodMode, ReplyConfig, ServerConfig, Shared, ZoneConfig};

#[derive(Args, Debug)]
pub struct DnsArgs {
    /// The kubeconfig to reach the API server with [default: in-cluster configuration,
    /// else $KUBECONFIG, else ~/.kube/config].
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The cluster domain (kubelet's --cluster-domain).
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Where DNS is served, over UDP and TCP (repeatable).
    #[arg(long, default_value = "0.0.0.0:53")]
    listen: Vec<SocketAddr>,
    /// Upstream resolvers for names outside the cluster zone (repeatable; `none`: refuse
    /// them) [default: the nameservers of --resolv-conf].
    #[arg(long)]
    upstream: Vec<String>,
    /// The resolv.conf whose nameservers are the default upstreams.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// TTL of the cluster zone's records and negative answers, in seconds.
    #[arg(long, default_value_t = 5)]
    ttl: u32,
    /// Pod records a-b-c-d.<ns>.pod.<zone>: verified (a pod has that address) |
    /// insecure (any address) | disabled.
    #[arg(long, default_value = "verified")]
    pods: PodMode,
    /// /health and /ready over HTTP (`none`: off).
    #[arg(long, default_value = "0.0.0.0:8181")]
    health: String,
    /// UDP threads [default: one per CPU].
    #[arg(long)]
    udp_workers: Option<usize>,
    /// The EDNS0 UDP payload size offered and honoured.
    #[arg(long, default_value_t = 1232)]
    max_udp_size: u16,
    /// How long to wait for an upstream, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    upstream_timeout_ms: u64,
}

fn upstreams(args: &DnsArgs) -> anyhow::Result<Vec<SocketAddr>> {
    if args.upstream.iter().any(|u| u == "none") {
        return Ok(Vec::new());
    }
    if args.upstream.is_empty() {
        return podnet_dns::resolv::read(&args.resolv_conf).with_context(|| {
            format!(
                "read the upstream resolvers from {}",
                args.resolv_conf.display()
            )
        });
    }
    args.upstream
        .iter()
        .map(|u| {
            u.parse::<SocketAddr>()
                .or_else(|_| {
                    u.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .with_context(|| format!("--upstream {u}: give an address or address:port"))
        })
        .collect()
}

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    match kubeconfig {
        Some(path) => podnet_agent::agent::client_from_kubeconfig(path)
            .await
            .map_err(anyhow::Error::from),
        None => {
            let config = kube::Config::infer()
                .await
                .context("find the API server (in-cluster, $KUBECONFIG or ~/.kube/config)")?;
            kube::Client::try_from(config).context("make the API client")
        }
    }
}

pub fn run(args: DnsArgs) -> anyhow::Result<()> {
    let mut zone = ZoneConfig::new(&args.cluster_domain, args.ttl)?;
    zone.pods = args.pods;
    let health = match args.health.as_str() {
        "none" => None,
        h => Some(
            h.parse()
                .with_context(|| format!("--health {h}: give address:port or none"))?,
        ),
    };
    let workers = args.udp_workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let bound = podnet_dns::bind(&ServerConfig {
        listen: args.listen.clone(),
        udp_workers: workers,
        health,
    })?;
    let upstreams = upstreams(&args)?;
    let forwarder = if upstreams.is_empty() {
        None
    } else {
        Some(Arc::new(Forwarder::new(
            upstreams.clone(),
            bound.addrs(),
            Duration::from_millis(args.upstream_timeout_ms),
        )?))
    };
    let shared = Arc::new(Shared::new(
        zone,
        ReplyConfig {
            max_udp: args.max_udp_size.max(512),
        },
        forwarder,
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
        let client = client(args.kubeconfig.as_ref()).await?;
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tracing::info!(
            listen = ?bound.addrs(),
            zone = %args.cluster_domain,
            upstreams = ?upstreams,
            udp_workers = workers,
            "serving DNS"
        );
        let watch_pods = args.pods == PodMode::Verified;
        let feed = tokio::spawn(podnet_dns::watch::run(
            client,
            shared.clone(),
            watch_pods,
            stop.clone(),
        ));
        let serve = tokio::spawn(bound.serve(shared, stop));
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
        let _ = feed.await;
        match serve.await {
            Ok(r) => r.map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::anyhow!("the DNS server task: {e}")),
        }
    })
}
