//! The podnet node agent. For now: the pod runtime's sandbox.

pub mod runtime;
