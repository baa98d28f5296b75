//! Per-namespace sysctls. `/proc/sys/net` shows the namespace of the thread
//! that opens it, so each access runs on a thread inside the namespace.

use std::fs;
use std::path::PathBuf;

use crate::error::{KernelError, Result};
use crate::netns::NetNs;

fn path_of(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

fn sysctl_err(key: &str, ns: &str, source: std::io::Error) -> KernelError {
    KernelError::Sysctl {
        key: key.to_string(),
        netns: ns.to_string(),
        source,
    }
}

/// Writes `value` to sysctl `key` (`net.ipv4.ip_forward` or
/// `net/ipv4/ip_forward`) in the calling thread's namespace.
pub fn write_here(key: &str, value: &str) -> Result<()> {
    let path = path_of(key);
    let current = fs::read_to_string(&path).map_err(|e| sysctl_err(key, "current", e))?;
    if current.trim() == value {
        return Ok(());
    }
    fs::write(&path, value).map_err(|e| sysctl_err(key, "current", e))
}

pub fn read_here(key: &str) -> Result<String> {
    fs::read_to_string(path_of(key))
        .map(|s| s.trim().to_string())
        .map_err(|e| sysctl_err(key, "current", e))
}

/// Writes a sysctl inside `ns`.
pub fn write(ns: &NetNs, key: &str, value: &str) -> Result<()> {
    ns.run(|| write_here(key, value))?
        .map_err(|e| relabel(e, ns.label()))
}

pub fn read(ns: &NetNs, key: &str) -> Result<String> {
    ns.run(|| read_here(key))?
        .map_err(|e| relabel(e, ns.label()))
}

fn relabel(e: KernelError, label: &str) -> KernelError {
    match e {
        KernelError::Sysctl { key, source, .. } => KernelError::Sysctl {
            key,
            netns: label.to_string(),
            source,
        },
        other => other,
    }
}
