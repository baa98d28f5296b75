//! podnet's Kubernetes-compatible API server.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod alloc;
pub mod controllers;
pub mod error;
pub mod http;
pub mod leader;
pub mod listeners;
pub mod meta;
pub mod metrics;
pub mod registry;
pub mod rest;
pub mod selector;
pub mod server;
pub mod tls;
mod typed;
pub mod versions;
