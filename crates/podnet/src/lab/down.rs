//! `podnet lab down`: removes everything a lab made (agents, pod sandboxes
//! and their namespace mounts, the apiserver and etcd, the node and underlay
//! namespaces with their links and nftables tables, and the lab's
//! directories). Idempotent, works on a half-built lab, and reports what it
//! removed. Also removes what `podnet lab demo --keep` left.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use nix::mount::MntFlags;
use podnet_kernel::NetNs;

use super::processes::{self, Outcome, Target, stop_all};
use super::state::{LabState, Processes};
use super::{LIB_ROOT, LabPaths, RUN_ROOT, topology, validate_name};

/// How long agents, etcd and the apiserver get to exit after SIGTERM.
const GRACE: Duration = Duration::from_secs(10);
/// How long pod sandboxes get.
const POD_GRACE: Duration = Duration::from_secs(5);

pub fn run(name: &str) -> Result<()> {
    validate_name(name)?;
    let paths = LabPaths::new(name);
    let demo = paths.demo_pids().exists();
    if demo {
        // The single-node demo (`lab demo --keep`) records its sandboxes'
        // and containers' pids, without start times: they are stopped here
        // when their command line is still the demo's, then the demo's own
        // clean-up removes its namespaces and files.
        let outcomes = stop_all(&demo_targets(&paths), POD_GRACE);
        let mut lines = Vec::new();
        let mut failures = Vec::new();
        report_stops(&outcomes, &mut lines, &mut failures);
        for line in lines.iter().chain(&failures) {
            println!("{line}");
        }
        crate::demo::down(name)?;
    }
    let removed = remove(&paths)?;
    if !removed.is_empty() {
        for line in &removed {
            println!("{line}");
        }
        println!("lab {name} is down");
    } else if !demo {
        println!("nothing to remove: there is no lab called {name}");
    }
    Ok(())
}

/// Removes the lab; returns a line for each thing removed.
pub fn remove(paths: &LabPaths) -> Result<Vec<String>> {
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let state = LabState::load(paths).unwrap_or_else(|e| {
        failures.push(format!("{e:#}"));
        None
    });
    let processes = Processes::load(paths).unwrap_or_else(|e| {
        failures.push(format!("{e:#}"));
        Processes::default()
    });

    // 1. Agents first, so that none restarts a pod being stopped.
    let agents: Vec<Target> = processes
        .processes
        .iter()
        .filter(|p| p.component == "agent")
        .map(|p| Target {
            label: p.label(),
            pid: p.pid,
            start_time: p.start_time,
        })
        .collect();
    report_stops(&stop_all(&agents, GRACE), &mut report, &mut failures);

    // 2. Pod sandboxes (their PID 1 takes every container process with it)
    //    and the names of their network namespaces.
    let node_dirs = node_state_dirs(paths, state.as_ref());
    let pods = pod_records(&node_dirs);
    let containers: Vec<Target> = pods.iter().flat_map(|p| p.containers.clone()).collect();
    report_stops(
        &stop_all(&containers, POD_GRACE),
        &mut report,
        &mut failures,
    );
    let sandboxes: Vec<Target> = pods.iter().filter_map(|p| p.target.clone()).collect();
    report_stops(&stop_all(&sandboxes, POD_GRACE), &mut report, &mut failures);

    // 3. The control plane.
    let control: Vec<Target> = ["apiserver", "etcd"]
        .iter()
        .filter_map(|c| processes.find(c, None))
        .map(|p| Target {
            label: p.label(),
            pid: p.pid,
            start_time: p.start_time,
        })
        .collect();
    report_stops(&stop_all(&control, GRACE), &mut report, &mut failures);

    // 4. Namespaces: pods' first, then nodes', then the underlay. Deleting a
    //    namespace's name lets the kernel destroy it with its links, routes
    //    and nftables tables once no process holds it.
    let mut names: Vec<String> = pods.iter().filter_map(|p| p.netns.clone()).collect();
    match topology::lab_namespaces(paths) {
        Ok(found) => names.extend(found),
        Err(e) => failures.push(format!("list network namespaces: {e}")),
    }
    if let Some(state) = &state {
        names.extend(state.nodes.iter().map(|n| n.netns.clone()));
        names.push(state.underlay.netns.clone());
    }
    let underlay = paths.underlay_ns();
    names.sort_by_key(|n| {
        let rank = if paths.node_index(n).is_some() {
            1
        } else if *n == underlay {
            2
        } else {
            0
        };
        (rank, n.clone())
    });
    names.dedup();
    for name in names {
        if !NetNs::path_of(&name).exists() {
            continue;
        }
        match NetNs::delete(&name) {
            Ok(()) => report.push(format!("removed network namespace {name}")),
            Err(e) => failures.push(format!("remove network namespace {name}: {e}")),
        }
    }

    // 5. Anything mounted under the lab's run directory, then the files.
    for mount in mounts_under(&paths.run) {
        match nix::mount::umount2(&mount, MntFlags::MNT_DETACH) {
            Ok(()) => report.push(format!("unmounted {}", mount.display())),
            Err(e) => failures.push(format!("unmount {}: {e}", mount.display())),
        }
    }
    for dir in [&paths.run, &paths.lib] {
        match fs::remove_dir_all(dir) {
            Ok(()) => report.push(format!("removed {}", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => failures.push(format!("remove {}: {e}", dir.display())),
        }
    }
    // The shared parents go too once no lab is left in them.
    for root in [RUN_ROOT, LIB_ROOT] {
        let _ = fs::remove_dir(root);
    }
    if !failures.is_empty() {
        for line in &report {
            println!("{line}");
        }
        bail!(
            "lab {} is not completely removed:\n  - {}\nfix the cause and run `podnet lab down --name {}` again",
            paths.name,
            failures.join("\n  - "),
            paths.name
        );
    }
    Ok(report)
}

fn report_stops(
    outcomes: &[(Target, Outcome)],
    report: &mut Vec<String>,
    failures: &mut Vec<String>,
) {
    for (t, outcome) in outcomes {
        match outcome {
            Outcome::Gone => {}
            Outcome::Stopped => report.push(format!("stopped {} (pid {})", t.label, t.pid)),
            Outcome::Killed => report.push(format!(
                "killed {} (pid {}): it did not stop on SIGTERM",
                t.label, t.pid
            )),
            Outcome::Stuck => {
                failures.push(format!("{} (pid {}) survived SIGKILL", t.label, t.pid))
            }
        }
    }
}

/// The nodes' state directories: from lab.json, and any under
/// `/run/podnet/<lab>/nodes` (a lab whose lab.json is gone).
fn node_state_dirs(paths: &LabPaths, state: Option<&LabState>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = state
        .map(|s| s.nodes.iter().map(|n| n.state_dir.clone()).collect())
        .unwrap_or_default();
    if let Ok(entries) = fs::read_dir(paths.run.join("nodes")) {
        dirs.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

/// A pod the agent's runtime recorded: its sandbox process (when it is
/// still the one recorded), its containers' processes and its network
/// namespace's name.
struct PodRecord {
    target: Option<Target>,
    containers: Vec<Target>,
    netns: Option<String>,
}

/// Reads `<state_dir>/pods/*.json` (the pod runtime's records: `sandbox_pid`,
/// `sandbox_name` or `netns`, and `containers[]` with `pid` and
/// `start_ticks`).
fn pod_records(node_dirs: &[PathBuf]) -> Vec<PodRecord> {
    let mut pods = Vec::new();
    for dir in node_dirs {
        let Ok(entries) = fs::read_dir(dir.join("pods")) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Some(record) = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            else {
                continue;
            };
            pods.push(pod_record(&path, &record));
        }
    }
    pods
}

fn pod_record(path: &Path, record: &serde_json::Value) -> PodRecord {
    let pod = match (record["namespace"].as_str(), record["name"].as_str()) {
        (Some(ns), Some(name)) => format!("pod {ns}/{name}"),
        _ => format!(
            "pod {}",
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
    };
    let label = format!("sandbox of {pod}");
    let netns = ["sandbox_name", "netns"]
        .iter()
        .filter_map(|k| record[*k].as_str())
        .map(|v| {
            Path::new(v)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .find(|n| !n.is_empty());
    let target = record["sandbox_pid"]
        .as_i64()
        .and_then(|pid| i32::try_from(pid).ok())
        .filter(|pid| *pid > 1)
        .and_then(|pid| {
            let recorded = ["sandbox_start_ticks", "sandbox_start_time"]
                .iter()
                .find_map(|k| record[*k].as_u64());
            let start_time = match recorded {
                Some(t) => t,
                // No start time recorded: only a `podnet pause` process is
                // taken to be the sandbox.
                None if is_pause(pid) => processes::start_time(pid)?,
                None => return None,
            };
            Some(Target {
                label: label.clone(),
                pid,
                start_time,
            })
        });
    let containers = record["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let pid = i32::try_from(c["pid"].as_i64()?).ok()?;
            let start_time = c["start_ticks"].as_u64()?;
            Some(Target {
                label: format!("container {} of {pod}", c["name"].as_str().unwrap_or("?")),
                pid,
                start_time,
            })
        })
        .collect();
    PodRecord {
        target,
        containers,
        netns,
    }
}

/// The demo's processes that are still the demo's: `podnet pause`, `podnet
/// sandbox exec` or `podnet probe`, judged by their command line (which,
/// unlike /proc/PID/exe, survives a rebuilt binary).
fn demo_targets(paths: &LabPaths) -> Vec<Target> {
    let text = fs::read_to_string(paths.demo_pids()).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 1)
        .filter_map(|pid| {
            let cmdline = processes::cmdline(pid);
            let mut words = cmdline.split(' ');
            let exe = words.next().unwrap_or("");
            let verb = words.next().unwrap_or("");
            let ours = Path::new(exe).file_name().is_some_and(|f| f == "podnet")
                && ["pause", "sandbox", "probe"].contains(&verb);
            ours.then(|| {
                Some(Target {
                    label: format!("demo process `{cmdline}`"),
                    pid,
                    start_time: processes::start_time(pid)?,
                })
            })
            .flatten()
        })
        .collect()
}

fn is_pause(pid: i32) -> bool {
    let cmdline = processes::cmdline(pid);
    let mut words = cmdline.split(' ');
    let exe = words.next().unwrap_or("");
    Path::new(exe).file_name().is_some_and(|f| f == "podnet") && words.next() == Some("pause")
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}
