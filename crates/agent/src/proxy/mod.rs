//! The node's service proxy (kube-proxy's job), run by the agent: [`podnet_proxy`] in the
//! mode `--proxy-mode` names. A proxy that fails (its watch ended, the API went away) is
//! restarted with back-off instead of stopping the agent: the node's pods keep running and
//! the rules already in the kernel keep serving meanwhile.
//!
//! Every failure, and every sync's outcome (told through the proxy's
//! [`podnet_proxy::SyncObserver`]), goes to the node's [`Health`]: a proxy that keeps failing
//! makes the Node `NetworkUnavailable` (`ServiceProxyFailing`, with the last error) instead
//! of only filling the agent's log; the same events feed the proxy's metrics.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;
use podnet_proxy::{ProxyConfig, ProxyEvent, ProxyMode};
use tokio::sync::watch;

use crate::metrics::proxy::ProxyMetrics;
use crate::node::backoff::Backoff;
use crate::node::health::{Health, Part};
use crate::node::{sleep_or_stop, stopping};

/// The proxy's part of the agent's configuration.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub mode: ProxyMode,
    /// The range ClusterIPs come from: an unallocated address in it is rejected.
    pub service_cidr: Option<Ipv4Net>,
    /// Full resync period.
    pub sync_period: Duration,
}

/// What the proxy needs to know about its node.
#[derive(Debug, Clone)]
pub struct ProxyNode {
    pub name: String,
    pub ip: Ipv4Addr,
    pub cluster_cidr: Ipv4Net,
    /// Where the userspace mode remembers its listening ports.
    pub state_dir: PathBuf,
}

impl ProxySettings {
    fn config(&self, node: &ProxyNode) -> ProxyConfig {
        let mut config = ProxyConfig::new(node.name.clone(), vec![node.ip]);
        config.cluster_cidr = node.cluster_cidr;
        config.service_cidr = self.service_cidr;
        config.mode = self.mode;
        config.sync_period = self.sync_period;
        config.state_dir = Some(node.state_dir.clone());
        config
    }
}

/// Runs the proxy until `stop`; restarts it after a failure. Returns an error only for a
/// configuration the proxy refuses, which a restart cannot mend. Its failures and syncs are
/// reported to `health`.
pub async fn run(
    client: kube::Client,
    settings: ProxySettings,
    node: ProxyNode,
    health: Health,
    metrics: ProxyMetrics,
    mut stop: watch::Receiver<bool>,
) -> Result<(), podnet_proxy::ProxyError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let reports = health.clone();
    let observer = podnet_proxy::SyncObserver::new(move |event| {
        metrics.observe(event);
        match event {
            ProxyEvent::Synced(_) => reports.report(Part::ServiceProxy, Ok(())),
            ProxyEvent::Failed { error, .. } => {
                reports.report(Part::ServiceProxy, Err(error.to_string()))
            }
            ProxyEvent::Changes(_) => {}
        }
    });
    while !stopping(&stop) {
        let started = std::time::Instant::now();
        let mut config = settings.config(&node);
        config.on_sync = Some(observer.clone());
        match podnet_proxy::run(client.clone(), config, stop.clone()).await {
            Ok(()) => return Ok(()),
            Err(e @ podnet_proxy::ProxyError::Config(_)) => {
                health.report(Part::ServiceProxy, Err(e.to_string()));
                return Err(e);
            }
            Err(e) => {
                health.report(Part::ServiceProxy, Err(e.to_string()));
                if started.elapsed() > Duration::from_secs(60) {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, ?delay, "the service proxy failed; restarting it");
                if sleep_or_stop(delay, &mut stop).await {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
