//! The node's NetworkPolicy engine ([`podnet_policy`]), run by the agent beside the service
//! proxy. Each sync attempt is counted in its metrics and reported to the node's health (a
//! failing engine makes the Node `NetworkUnavailable`, reason `NetworkPolicyFailing`). Pods on one bridge talk in
//! bridged frames, which the policy table sees only with bridge netfilter on (as for the
//! proxy's same-node service traffic): if it cannot be turned on, that is reported too.

use std::time::Duration;

use podnet_policy::{RunConfig, SyncReport};
use tokio::sync::watch;

use crate::metrics::policy::PolicyMetrics;
use crate::node::health::{Health, Part};

/// The engine's part of the agent's configuration.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// The NFLOG group refused packets are logged to.
    pub log_group: u16,
    /// How often the kernel's table is checked against what was written.
    pub resync: Duration,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            log_group: 100,
            resync: Duration::from_secs(60),
        }
    }
}

const BRIDGE_NF: &str = "net.bridge.bridge-nf-call-iptables";

/// Runs the engine until `stop`.
pub async fn run(
    client: kube::Client,
    settings: PolicySettings,
    node: String,
    health: Health,
    metrics: PolicyMetrics,
    stop: watch::Receiver<bool>,
) -> Result<(), podnet_policy::PolicyError> {
    let bridge = podnet_kernel::sysctl::write_here(BRIDGE_NF, "1").map_err(|e| {
        format!("same-node pod traffic cannot be policed: {BRIDGE_NF}: {e} (load the br_netfilter module)")
    });
    let mut config = RunConfig::new(node);
    config.policy.log_group = settings.log_group;
    config.resync = settings.resync;
    let report = Box::new(
        move |outcome: Result<&SyncReport, &podnet_policy::PolicyError>| {
            metrics.observe(outcome);
            let outcome = match (outcome, &bridge) {
                (Err(e), _) => Err(e.to_string()),
                (Ok(_), Err(e)) => Err(e.clone()),
                (Ok(_), Ok(())) => Ok(()),
            };
            health.report(Part::NetworkPolicy, outcome);
        },
    );
    podnet_policy::run(client, config, report, stop).await
}
