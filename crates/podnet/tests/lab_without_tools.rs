//! A lab runs without the `ip` and `nft` programs: `lab up` and every agent run with a
//! `PATH` holding only podnet's own binaries (and `PODNET_NFT` empty, so not even the
//! proxy's fallback can find `nft`), for each backend and both proxy modes. Through it,
//! pod to pod across nodes, a ClusterIP, a NodePort from outside the cluster, and a pod's
//! traffic to an address outside the cluster range, masqueraded to its node. (The test
//! itself probes with nsenter from outside; only podnet runs without the tools.)

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Lab, PODNET, is_root, wait_for};
use serde_json::Value;

/// A directory holding links to podnet's binaries and nothing else.
fn bin_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("podnet-bin-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bin dir");
    let here = Path::new(PODNET).parent().expect("bin dir of podnet");
    for bin in ["podnet", "podnet-cni"] {
        std::os::unix::fs::symlink(here.join(bin), dir.join(bin)).expect("link");
    }
    dir
}

fn service_manifest() -> &'static str {
    "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  selector: {app: p2}\n  ports:\n  - {port: 80, targetPort: 8080}\n"
}

/// Every path through one lab of `backend` and `mode`.
fn exercise(prefix: &str, underlay: &str, backend: &str, mode: &str) {
    let bin = bin_dir(prefix);
    let mut lab = Lab::new(prefix, underlay);
    lab.env = Some(vec![
        ("PATH".into(), bin.display().to_string()),
        ("PODNET_NFT".into(), String::new()),
        ("HOME".into(), "/root".into()),
    ]);
    lab.up(2, &["--backend", backend, "--proxy-mode", mode]);
    lab.server_pod("p1", 1);
    lab.server_pod("p2", 2);
    lab.apply(service_manifest());
    let ips = lab.ready_ips(&["p1", "p2"]);
    let p1 = lab.pod_netns("p1");
    let within = Duration::from_secs(10);

    // Pod to pod across nodes, the source kept.
    let answer = lab.tcp_from(&p1, &format!("{}:8080", ips["p2"]), within);
    assert!(
        answer.contains(&format!("(from {}:", ips["p1"])),
        "{backend}/{mode}: {answer}"
    );

    // The ClusterIP, from a pod on the other node.
    let svc: Value = serde_json::from_str(&lab.ok(&["get", "svc", "web", "-o", "json"])).unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let answer = lab.tcp_from(&p1, &format!("{cluster_ip}:80"), within);
    assert!(answer.starts_with("p2 got:"), "{backend}/{mode}: {answer}");

    // The NodePort on node 1 from outside the cluster, served by p2 on node 2.
    let outside = PathBuf::from(lab.underlay_netns());
    let answer = lab.tcp_from(&outside, &format!("{}:{node_port}", lab.node_ip(1)), within);
    assert!(answer.starts_with("p2 got:"), "{backend}/{mode}: {answer}");

    // Outside the cluster range a pod is its node.
    let listen = format!("{}:9000", lab.bridge_ip());
    let mut server = std::process::Command::new("nsenter")
        .arg(format!("--net={}", outside.display()))
        .args(["--", PODNET, "probe", "serve", "--tcp", &listen])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let node1 = lab.node_ip(1);
    let seen = wait_for(within, "p1 to the outside server", || {
        let answer = lab.tcp_from(&p1, &listen, Duration::from_secs(3));
        answer
            .contains(&format!("(from {node1}:"))
            .then_some(answer.clone())
            .ok_or(answer)
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(seen.0.contains(&node1));
    drop(lab);
    let _ = std::fs::remove_dir_all(bin);
}

#[test]
fn vxlan_labs_run_without_ip_or_nft() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    exercise("ntv", "172.31.70.0/24", "vxlan", "nftables");
    exercise("ntvu", "172.31.71.0/24", "vxlan", "userspace");
}

#[test]
fn host_gw_labs_run_without_ip_or_nft() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    exercise("nth", "172.31.72.0/24", "host-gw", "nftables");
    exercise("nthu", "172.31.73.0/24", "host-gw", "userspace");
}

#[test]
fn udp_labs_run_without_ip_or_nft() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    exercise("ntu", "172.31.74.0/24", "udp", "nftables");
    exercise("ntuu", "172.31.75.0/24", "udp", "userspace");
}
