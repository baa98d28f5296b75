//! The podnet node agent: node registration, lease and network set-up ([`node`]), the pod
//! runtime ([`pods`], on the sandbox primitives of [`runtime`]), the service proxy
//! ([`proxy`]) and the NetworkPolicy engine ([`policy`]), tied together by [`agent`], with
//! their Prometheus metrics ([`metrics`]).
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod agent;
pub mod metrics;
pub mod node;
pub mod pods;
pub mod policy;
pub mod proxy;
pub mod runtime;
