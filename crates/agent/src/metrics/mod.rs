//! The agent's Prometheus metrics, served as text (format 0.0.4) on `/metrics` at
//! `--metrics-bind` (kube-proxy's 127.0.0.1:10249 by default; in the lab each agent binds
//! inside its node's namespace).
//!
//! Two kinds, each where it is cheapest and truest:
//! - what the agent's loops are told as they run — the service proxy's syncs and watch
//!   changes (its [`podnet_proxy::SyncObserver`]), the policy engine's sync reports, each
//!   network pass's peers — is counted as it happens ([`proxy`], [`policy`], [`network`]);
//! - what the kernel and the disk hold — the nftables objects of the proxy and policy
//!   tables and the policy drop counters ([`kernel`]), the IPAM's addresses ([`ipam`]), the
//!   udp tunnel's packet and drop counters — is read at each scrape, so it is the state of
//!   that moment and costs nothing between scrapes. A part that cannot be read says so in
//!   `podnet_scrape_collector_success{collector}` instead of failing the whole scrape.

pub mod ipam;
pub mod kernel;
pub mod network;
pub mod policy;
pub mod proxy;
mod server;

use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

pub use server::{MetricsError, bind, serve};

/// Buckets of the sync duration histograms: kube-proxy's (1 ms doubling to 16 s).
pub(crate) fn sync_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15)
}

/// Seconds since the Unix epoch, for `*_last_timestamp_seconds`.
pub(crate) fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Everything the agent exposes; the handles are cheap clones for the tasks that count.
pub struct AgentMetrics {
    registry: Registry,
    pub proxy: proxy::ProxyMetrics,
    pub policy: policy::PolicyMetrics,
    pub network: network::NetworkMetrics,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentMetrics")
    }
}

impl AgentMetrics {
    /// The metrics of node `node`, whose IPAM keeps its allocations in `ipam_dir` (the
    /// network's directory under the conflist's `dataDir`).
    pub fn new(node: &str, ipam_dir: PathBuf) -> Arc<AgentMetrics> {
        let mut registry = Registry::default();
        let proxy = proxy::ProxyMetrics::register(&mut registry);
        let policy = policy::PolicyMetrics::register(&mut registry);
        let network = network::NetworkMetrics::register(&mut registry, node);
        registry.register_collector(Box::new(Scrape {
            ipam_dir,
            state: network.state(),
        }));
        Arc::new(AgentMetrics {
            registry,
            proxy,
            policy,
            network,
        })
    }

    /// The text a scrape gets. Blocking: the collectors read the kernel and the disk.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// What is read at each scrape: the kernel's tables, the IPAM's directory, the tunnel's
/// counters; then whether each could be read (`podnet_scrape_collector_success`, as
/// node_exporter's `node_scrape_collector_success`).
#[derive(Debug)]
struct Scrape {
    ipam_dir: PathBuf,
    state: network::SharedState,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tables = kernel::encode(&mut encoder)?;
        let subnet = self.state.subnet();
        let ipam = ipam::encode(&mut encoder, &self.ipam_dir, subnet)?;
        network::encode_tunnel(&mut encoder, self.state.tunnel().as_ref())?;
        let gauge = |ok: bool| ConstGauge::new(i64::from(ok));
        let mut metric = encoder.encode_descriptor(
            "podnet_scrape_collector_success",
            "Whether the collector could read what it reports at this scrape (1) or not (0).",
            None,
            gauge(true).metric_type(),
        )?;
        for (name, ok) in [("nftables", tables), ("ipam", ipam)] {
            gauge(ok).encode(metric.encode_family(&[("collector", name)])?)?;
        }
        Ok(())
    }
}
