//! NetworkPolicy on every node, in nftables: the cluster's pods, namespaces and
//! `networking.k8s.io/v1` NetworkPolicies ([`cluster`]) compiled into the node's desired
//! table ([`model`], pure), written over netlink in one transaction per sync.
//!
//! Semantics are upstream's: a pod is isolated for a direction only when a policy of that
//! type selects it; policies add up (allow-lists); replies of allowed connections pass;
//! traffic from the pod's own node passes (it never crosses the forward hook); policies
//! see traffic after the service proxy's DNAT. See the crate's README for the design.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cluster;
pub mod model;
pub mod runner;
pub mod selector;

pub use cluster::{Cluster, NamedPort, PodInfo};
pub use model::{Direction, Note, PolicyConfig, TABLE, compile, desired};
pub use runner::{PolicyError, RunConfig, SyncReport, Syncer, run};
