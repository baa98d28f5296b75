//! The pod runtime: what kubelet and a container runtime do, for processes.

pub mod cni;
pub mod exec;
pub mod pause;
pub mod sandbox;

pub use sandbox::{Sandbox, SandboxError};
