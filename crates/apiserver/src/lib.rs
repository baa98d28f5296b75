//! podnet's Kubernetes-compatible API server.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod error;
pub mod meta;
pub mod registry;
pub mod selector;
