//! Shared types and validation for podnet. No I/O lives here.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cni;
pub mod k8s;
pub mod net;
pub mod subnet_env;

/// Re-exported so that users of the address types need no direct dependency.
pub use ipnet;

#[cfg(test)]
mod proptests;
