//! The podnet CNI plugin.

pub mod ipam;
pub mod plugin;
