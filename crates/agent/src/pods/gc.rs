//! Garbage collection at start-up, before any worker runs: sandboxes of this
//! node that no record knows (an agent crashed between starting one and
//! recording it) are stopped and unnamed, and the CNI plugin's GC releases
//! every address and interface that belongs to no recorded pod.

use std::collections::HashSet;
use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use podnet_kernel::NetNs;

use super::Ctx;
use super::state::{self, PodState};

pub(crate) async fn collect_orphans(ctx: &std::sync::Arc<Ctx>, records: &[PodState]) {
    let known: HashSet<String> = records.iter().map(|r| r.sandbox_name.clone()).collect();
    let uids: HashSet<String> = records.iter().map(|r| r.uid.clone()).collect();
    let prefix = ctx.sandbox_prefix();
    let podnet = ctx.config.podnet_bin.clone();
    let state_dir = ctx.config.state_dir.clone();
    let sandboxes = tokio::task::spawn_blocking(move || {
        let mut removed = Vec::new();
        for name in NetNs::list_named().unwrap_or_default() {
            if name.starts_with(&prefix) && !known.contains(&name) {
                stop_holders(&name, &podnet);
                match NetNs::delete(&name) {
                    Ok(()) => removed.push(name),
                    Err(e) => {
                        tracing::warn!(sandbox = %name, error = %e, "remove an orphan sandbox")
                    }
                }
            }
        }
        remove_orphan_dirs(&state_dir, &uids);
        removed
    })
    .await
    .unwrap_or_default();
    if !sandboxes.is_empty() {
        tracing::info!(sandboxes = ?sandboxes, "removed orphan sandboxes");
    }
    let valid: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.uid.clone(), "eth0".to_string()))
        .collect();
    let ctx = ctx.clone();
    let gc = tokio::task::spawn_blocking(move || {
        let network = ctx.network()?;
        network.gc(&valid).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match gc {
        Ok(()) => tracing::debug!("CNI GC done"),
        Err(e) => {
            tracing::warn!(error = %e, "CNI GC (addresses of pods that are gone may stay allocated)")
        }
    }
}

/// Kills the sandbox processes (the `podnet` binary: pause and container
/// supervisors) inside network namespace `name`; the pod's other processes
/// die with its PID 1.
fn stop_holders(name: &str, podnet: &Path) {
    let Ok(id) = NetNs::open(name).and_then(|ns| ns.id()) else {
        return;
    };
    let podnet = std::fs::canonicalize(podnet).unwrap_or_else(|_| podnet.to_path_buf());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let in_ns = NetNs::open_pid(pid)
            .and_then(|ns| ns.id())
            .is_ok_and(|pid_ns| pid_ns == id);
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if in_ns && exe == podnet {
            tracing::info!(sandbox = %name, pid, "stopping a process of an orphan sandbox");
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Exit-record directories of pods that have no record.
fn remove_orphan_dirs(state_dir: &Path, uids: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(state::pods_dir(state_dir)) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let is_orphan = path.is_dir()
            && entry
                .file_name()
                .to_str()
                .is_some_and(|uid| !uids.contains(uid));
        if is_orphan {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}
