//! `podnet lab up` timing and memory: brings up a lab of 10 and of 30 nodes
//! (PODNET_BENCH_NODES="5,20" to choose), prints how long `lab up` took
//! until every Node was Ready, the apiserver's and the agents' RSS, then
//! takes the lab down. Needs root; everything happens inside the lab's own
//! namespaces.
//!
//! Run with `cargo bench -p podnet --bench lab_up`.

use std::process::Command;
use std::time::Instant;

const PODNET: &str = env!("CARGO_BIN_EXE_podnet");
const TARGET_UP_30_S: f64 = 20.0;
const TARGET_AGENT_RSS_MIB: f64 = 30.0;

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
