//! The podnet node agent: node registration, lease and network set-up ([`node`]), the pod
//! runtime ([`pods`], on the sandbox primitives of [`runtime`]) and the service proxy
//! ([`proxy`]), tied together by [`agent`].
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod agent;
pub mod node;
pub mod pods;
pub mod policy;
pub mod proxy;
pub mod runtime;
