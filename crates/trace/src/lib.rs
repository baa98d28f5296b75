//! `podnet trace`: the path of a packet through the cluster, explained from the kernel state
//! of the namespaces it crosses ([`snapshot`]), walked hop by hop ([`explain`]) with the
//! nftables tracer of `podnet_kernel::ruleset` for the rules, and printed for people or as
//! JSON ([`render`]); or followed live, a real probe traced by the kernel itself ([`live`]).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod explain;
pub mod listening;
pub mod live;
pub mod render;
pub mod snapshot;
pub mod world;

pub use explain::{ExplainError, Explanation, Hop, Verdict, explain};
pub use live::{LiveError, LiveHop, LiveTrace, LiveVerdict, live};
pub use snapshot::{Snapshot, SnapshotError};
pub use world::{Destination, Listener, NodeView, PodView, ServiceView, Source, World};
