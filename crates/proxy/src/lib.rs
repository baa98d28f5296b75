//! The service proxy that runs on every node (kube-proxy's job).

#![cfg_attr(test, allow(clippy::unwrap_used))]
