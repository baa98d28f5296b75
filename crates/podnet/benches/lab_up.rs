//! `podnet lab up` timing and memory: brings up a lab of 10 and of 30 nodes
//! (PODNET_BENCH_NODES="5,20" to choose), prints how long `lab up` took
//! until every Node was Ready, the apiserver's and the agents' RSS; on the
//! 10-node lab, right after it is up, creates 100 pods spread over the nodes
//! (one `podnet apply`) and prints the time until all are Running and Ready
//! and the agents' RSS with the pods running; then takes the lab down.
//! Needs root; everything happens inside the lab's own namespaces.
//!
//! Run with `cargo bench -p podnet --bench lab_up`.

use std::io::Write;
use std::process::Command;
use std::process::Stdio;
use std::time::{Duration, Instant};

const PODNET: &str = env!("CARGO_BIN_EXE_podnet");
const TARGET_UP_30_S: f64 = 20.0;
const TARGET_AGENT_RSS_MIB: f64 = 30.0;
const PODS: u32 = 100;
const PODS_NODES: u32 = 10;
const TARGET_PODS_READY_S: f64 = 10.0;
/// How long the pods get before the bench gives up.
const PODS_WITHIN: Duration = Duration::from_secs(180);

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("lab_up bench: needs root (network namespaces); skipped");
        return;
    }
    let sizes: Vec<u32> = std::env::var("PODNET_BENCH_NODES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 30]);
    let name = format!("b{}", std::process::id());
    println!("lab_up: `podnet lab up` until every Node is Ready ({PODNET})");
    for nodes in sizes {
        if let Err(e) = bench_one(&name, nodes) {
            eprintln!("lab_up: {nodes} nodes: {e}");
        }
        let _ = Command::new(PODNET)
            .args(["lab", "down", "--name", &name])
            .output();
    }
}

fn bench_one(name: &str, nodes: u32) -> Result<(), String> {
    let started = Instant::now();
    let out = Command::new(PODNET)
        .args(["lab", "up", "--name", name, "--nodes", &nodes.to_string()])
        .output()
        .map_err(|e| format!("run podnet lab up: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "lab up failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let target = if nodes == 30 {
        format!(" (target < {TARGET_UP_30_S} s)")
    } else {
        String::new()
    };
    println!("  {nodes:>3} nodes: lab up {secs:.2} s{target}");
    print_rss(name)?;
    if nodes == PODS_NODES {
        match pods_ready(name, nodes) {
            Ok(()) => {
                println!("             with {PODS} pods running:");
                print_rss(name)?;
            }
            Err(e) => eprintln!("lab_up: {PODS} pods over {nodes} nodes: {e}"),
        }
    }
    let started = Instant::now();
    let out = Command::new(PODNET)
        .args(["lab", "down", "--name", name])
        .output()
        .map_err(|e| format!("run podnet lab down: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "lab down failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    println!(
        "             lab down {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Creates PODS pods, round-robin over the nodes by spec.nodeName, with one
/// `podnet apply`, and prints the time from the apply until every pod is
/// Running with Ready=True (polled every 100 ms, at most PODS_WITHIN).
fn pods_ready(name: &str, nodes: u32) -> Result<(), String> {
    let kubeconfig = format!("/var/lib/podnet/{name}/kubeconfig");
    let mut manifest = String::new();
    for i in 0..PODS {
        let node = i % nodes + 1;
        manifest.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: bench-{i}}}\nspec:\n  nodeName: {name}-node{node}\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n"
        ));
    }
    let started = Instant::now();
    let mut child = Command::new(PODNET)
        .args(["--kubeconfig", &kubeconfig, "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run podnet apply: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(manifest.as_bytes())
        .map_err(|e| format!("write the manifest: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("podnet apply: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let applied = started.elapsed().as_secs_f64();
    let deadline = started + PODS_WITHIN;
    loop {
        let out = Command::new(PODNET)
            .args(["--kubeconfig", &kubeconfig, "get", "pods", "-o", "json"])
            .output()
            .map_err(|e| format!("run podnet get pods: {e}"))?;
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let ready = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["status"]["phase"] == "Running"
                    && p["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        if ready == PODS as usize {
            println!(
                "             {PODS} pods over {nodes} nodes Running and Ready: {:.2} s (target < {TARGET_PODS_READY_S} s; apply itself {applied:.2} s)",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "only {ready}/{PODS} Running and Ready after {} s",
                PODS_WITHIN.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The apiserver's and the agents' RSS.
fn print_rss(name: &str) -> Result<(), String> {
    let processes = read_processes(name)?;
    let mut agents = Vec::new();
    for (component, pid) in processes {
        let Some(rss) = rss_mib(pid) else { continue };
        match component.as_str() {
            "agent" => agents.push(rss),
            other => println!("             {other} RSS {rss:.1} MiB"),
        }
    }
    if !agents.is_empty() {
        let max = agents.iter().cloned().fold(0.0, f64::max);
        let mean = agents.iter().sum::<f64>() / agents.len() as f64;
        println!(
            "             agent RSS mean {mean:.1} MiB, max {max:.1} MiB over {} agents (target < {TARGET_AGENT_RSS_MIB} MiB)",
            agents.len()
        );
    }
    Ok(())
}

/// (component, pid) of the lab's processes, from its processes.json.
fn read_processes(name: &str) -> Result<Vec<(String, i32)>, String> {
    let path = format!("/run/podnet/{name}/processes.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("parse {path}: {e}"))?;
    Ok(doc["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["component"].as_str()?.to_string(),
                i32::try_from(p["pid"].as_i64()?).ok()?,
            ))
        })
        .collect())
}

/// VmRSS of a process, in MiB.
fn rss_mib(pid: i32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
