//! The node side of the agent — what kubelet does for a node, plus the node network set-up
//! the pod runtime needs:
//!
//! - [`registration`]: creates or updates the Node object (labels, addresses, system info,
//!   capacity, conditions) and re-posts its status;
//! - [`health`]: the health of the overlay, masquerade and service proxy, and the Node's
//!   `NetworkUnavailable` condition that follows from it;
//! - [`lease`]: renews the node's heartbeat Lease `kube-node-lease/<node>`;
//! - [`network`]: waits for the Node's `spec.podCIDR`, runs the overlay backend
//!   (`--backend`), writes `subnet.env` and the CNI conflist ([`files`]), enables forwarding,
//!   hands the backend the other nodes as peers ([`peers`]), keeps the masquerade table and
//!   publishes the node's overlay annotations, level-triggered with a periodic resync;
//! - [`sysinfo`]: what the node reports about itself (OS, kernel, CPUs, memory, node IP, MTU).
//!
//! Everything talks to the control plane only through the Kubernetes API (kube-rs), so it
//! runs unchanged against a real Kubernetes API server.

pub mod backoff;
pub mod files;
pub mod health;
pub mod lease;
pub mod network;
pub mod peers;
pub mod registration;
pub mod sysinfo;

use std::path::PathBuf;
use std::time::Duration;

use podnet_kernel::KernelError;

pub use registration::Readiness;

/// What the node side of the agent could not do.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A Kubernetes API request failed.
    #[error(
        "{action}: {source} (check that the apiserver is reachable and that the kubeconfig's user may do this)"
    )]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// A file could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A netlink, namespace or sysctl operation failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The configuration or the cluster's objects do not fit together.
    #[error("{0}")]
    Invalid(String),
    /// A blocking kernel task was cancelled or panicked.
    #[error("{what}: the worker thread failed: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl NodeError {
    pub(crate) fn api(action: impl Into<String>, source: kube::Error) -> NodeError {
        NodeError::Api {
            action: action.into(),
            source,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        NodeError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// How often the node side does things. The defaults are kubelet's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTimings {
    /// Lease renewal period (kubelet: a quarter of the 40 s lease duration).
    pub lease_renew: Duration,
    /// `leaseDurationSeconds` written on the Lease.
    pub lease_duration_seconds: i32,
    /// How often the Node status is re-posted when nothing changed (kubelet's
    /// `nodeStatusReportFrequency`).
    pub status_report: Duration,
    /// Full pass of the node network (files, forwarding, backend device and peers,
    /// masquerade) even without a change: it repairs hand-made changes.
    pub network_resync: Duration,
    /// The longest wait between retries after an API error.
    pub max_backoff: Duration,
}

impl Default for NodeTimings {
    fn default() -> Self {
        NodeTimings {
            lease_renew: Duration::from_secs(10),
            lease_duration_seconds: 40,
            status_report: Duration::from_secs(60),
            network_resync: Duration::from_secs(30),
            max_backoff: Duration::from_secs(7),
        }
    }
}

/// True once shutdown was requested (the value is `true`) or its sender is gone.
pub(crate) fn stopping(shutdown: &tokio::sync::watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Resolves when shutdown is requested (or its sender is dropped).
pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Sleeps for `delay`; returns `true` when shutdown was requested meanwhile.
pub(crate) async fn sleep_or_stop(
    delay: Duration,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => stopping(shutdown),
        _ = stopped(shutdown) => true,
    }
}
