//! Concurrent allocations from threads and from separate processes never hand out one
//! address twice.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use podnet_api::cni::Pool;
use podnet_cni::ipam::Ipam;

const CHILD_DIR: &str = "PODNET_IPAM_TEST_CHILD_DIR";
const CHILD_ID: &str = "PODNET_IPAM_TEST_CHILD_ID";

fn pool() -> Pool {
    Pool::new("10.88.0.0/24".parse().unwrap(), None, None, None).unwrap()
}

#[test]
fn fifty_threads_get_fifty_distinct_ips() {
    let d = tempfile::tempdir().unwrap();
    let p = pool();
    let ips: Vec<Ipv4Addr> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let dir = d.path();
                s.spawn(move || {
                    // each thread opens its own handle, as separate plugin runs would
                    let ipam = Ipam::open(dir, "podnet").unwrap();
                    ipam.allocate(&p, &format!("thread{i}"), "eth0").unwrap().ip
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let distinct: HashSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), 50, "{ips:?}");
    let ipam = Ipam::open(d.path(), "podnet").unwrap();
    assert_eq!(ipam.list().unwrap().len(), 50);
}

/// Runs as the child process of `fifty_processes_get_fifty_distinct_ips`; a no-op otherwise.
#[test]
fn child_process_allocates() {
    let (Ok(dir), Ok(id)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_ID)) else {
        return;
    };
    let ipam = Ipam::open(std::path::Path::new(&dir), "podnet").unwrap();
    let a = ipam
        .allocate(&pool(), &format!("proc{id}"), "eth0")
        .unwrap();
    println!("ALLOCATED {}", a.ip);
}

#[test]
fn fifty_processes_get_fifty_distinct_ips() {
    let d = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..50)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "child_process_allocates",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR, d.path())
                .env(CHILD_ID, i.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ips = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // libtest prints "test NAME ... " on the same line as the child's output
        let ip = stdout
            .split("ALLOCATED ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("child printed no address: {stdout}"));
        ips.push(ip.parse::<Ipv4Addr>().unwrap());
    }
    let distinct: HashSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), 50, "{ips:?}");
    let ipam = Ipam::open(d.path(), "podnet").unwrap();
    let recs = ipam.list().unwrap();
    assert_eq!(recs.len(), 50);
    let owners: HashSet<_> = recs.iter().map(|r| r.container_id.clone()).collect();
    assert_eq!(owners.len(), 50);
}
