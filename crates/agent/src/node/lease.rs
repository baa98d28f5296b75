//! The node heartbeat: the `coordination.k8s.io/v1` Lease `kube-node-lease/<node>`, held by
//! the node and renewed every [`NodeTimings::lease_renew`], as kubelet does.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PostParams};
use serde_json::json;
use tokio::sync::watch;

use super::backoff::Backoff;
use super::registration::patch_params;
use super::{NodeError, NodeTimings, sleep_or_stop};

/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The Lease's owner reference to its Node, so that deleting the Node deletes the Lease (as
/// kubelet sets it).
pub fn owner_reference(node: &Node) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".to_string(),
        kind: "Node".to_string(),
        name: node.metadata.name.clone()?,
        uid: node.metadata.uid.clone()?,
        ..OwnerReference::default()
    })
}

/// What the agent renews.
#[derive(Debug, Clone)]
pub struct NodeLease {
    /// The node name: the Lease's name and holder.
    pub node_name: String,
    pub duration_seconds: i32,
    pub owner: Option<OwnerReference>,
}

impl NodeLease {
    /// Renews the Lease (`renewTime` now, holder and duration set), creating it when missing.
    pub async fn renew(&self, api: &Api<Lease>) -> Result<Lease, NodeError> {
        let name = self.node_name.as_str();
        let now = MicroTime(Timestamp::now());
        let patch = json!({"spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": self.duration_seconds,
            "renewTime": now,
        }});
        match api
            .patch(name, &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(lease) => return Ok(lease),
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => {
                return Err(NodeError::api(
                    format!("renewing Lease {NODE_LEASE_NAMESPACE}/{name}"),
                    e,
                ));
            }
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(NODE_LEASE_NAMESPACE.to_string()),
                owner_references: self.owner.clone().map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(name.to_string()),
                lease_duration_seconds: Some(self.duration_seconds),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..LeaseSpec::default()
            }),
        };
        let created = api
            .create(&PostParams::default(), &lease)
            .await
            .map_err(|e| {
                NodeError::api(format!("creating Lease {NODE_LEASE_NAMESPACE}/{name}"), e)
            })?;
        tracing::info!(node = name, "created the node Lease");
        Ok(created)
    }
}

/// Renews the Lease every `timings.lease_renew` until shutdown; after a failure, retries with
/// back-off (never later than the renewal period).
pub async fn run_lease_loop(
    api: Api<Lease>,
    lease: NodeLease,
    timings: NodeTimings,
    mut shutdown: watch::Receiver<bool>,
) {
    let cap = timings.max_backoff.min(timings.lease_renew);
    let mut backoff = Backoff::new(std::time::Duration::from_millis(200), cap);
    let mut failing = false;
    loop {
        let delay = match lease.renew(&api).await {
            Ok(_) => {
                if failing {
                    tracing::info!(node = %lease.node_name, "renewing the node Lease works again");
                    failing = false;
                }
                backoff.reset();
                timings.lease_renew
            }
            Err(e) => {
                failing = true;
                let delay = backoff.next_delay();
                tracing::warn!(node = %lease.node_name, error = %e, retry_in = ?delay, "renewing the node Lease failed");
                delay
            }
        };
        if sleep_or_stop(delay, &mut shutdown).await {
            return;
        }
    }
}
