//! `podnet observe` on a real lab: a connection the test makes through a Service shows up
//! within a second as a new flow (pod to Service to the endpoint pod) and, once closed,
//! with the bytes it carried; a connection a NetworkPolicy refuses shows up as dropped,
//! with the policy's name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Lab, PODNET, is_root};
use serde_json::Value;

fn next_matching(
    rx: &mpsc::Receiver<Value>,
    within: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let left = within
            .checked_sub(start.elapsed())
            .unwrap_or_else(|| panic!("no {what} within {within:?}"));
        let flow = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {what} within {within:?}"));
        if ok(&flow) {
            return (flow, start.elapsed());
        }
    }
}

#[test]
fn observe_shows_connections_with_their_bytes_and_policy_drops_with_the_policy() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new("obs", "172.31.84.0/24");
    lab.up(2, &[]);
    lab.server_pod("p1", 1);
    lab.server_pod("p2", 2);
    lab.apply("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: p2}\n  ports:\n  - {port: 80, targetPort: 8080}\n");
    let ips = lab.ready_ips(&["p1", "p2"]);
    let svc: Value = serde_json::from_str(&lab.ok(&["get", "svc", "web", "-o", "json"])).unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let p1 = lab.pod_netns("p1");

    // Read from table dumps (the default), and from ctnetlink's events.
    let mut events = start_observe(&lab, &["--events"]);
    connection_is_seen(&lab, &events.1, &p1, &cluster_ip, &ips["p2"]);
    let _ = events.0.kill();
    let _ = events.0.wait();
    let (mut child, rx) = start_observe(&lab, &[]);
    connection_is_seen(&lab, &rx, &p1, &cluster_ip, &ips["p2"]);

    lab.apply("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\nspec:\n  podSelector: {matchLabels: {app: p2}}\n  policyTypes: [Ingress]\n");
    let denied = Instant::now();
    let (drop, _) = common::wait_for(Duration::from_secs(10), "a dropped flow", || {
        let _ = lab.in_pod(
            "p1",
            &[
                PODNET,
                "probe",
                "send",
                "--tcp",
                &format!("{}:8080", ips["p2"]),
                "--timeout",
                "1",
            ],
        );
        match rx.try_iter().find(|f| f["verdict"] == "dropped") {
            Some(f) => Ok(f),
            None => Err("none yet".into()),
        }
    });
    assert_eq!(drop["policy"], "default/deny", "{drop}");
    assert_eq!(drop["source"]["name"], "pod default/p1", "{drop}");
    assert_eq!(drop["destination"]["name"], "pod default/p2", "{drop}");
    assert!(denied.elapsed() < Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
}

/// `podnet observe -o json` on the lab with `extra` flags; its flows as they come.
fn start_observe(lab: &Lab, extra: &[&str]) -> (std::process::Child, mpsc::Receiver<Value>) {
    let mut child = Command::new(PODNET)
        .args(["--kubeconfig", &lab.kubeconfig, "observe", "-o", "json"])
        .args(["--timeout", "60", "--from-namespace", "default"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    // Give the listeners their moment to start (they print nothing until a flow).
    std::thread::sleep(Duration::from_millis(500));
    (child, rx)
}

/// A connection from p1 through Service web shows as new within a second, then as closed
/// with the bytes it carried each way.
fn connection_is_seen(
    lab: &Lab,
    rx: &mpsc::Receiver<Value>,
    p1: &std::path::Path,
    cluster_ip: &str,
    p2: &str,
) {
    let started = Instant::now();
    let answer = lab.tcp_from(p1, &format!("{cluster_ip}:80"), Duration::from_secs(5));
    assert!(answer.starts_with("p2 got:"), "{answer}");
    let is_ours = |f: &Value| {
        f["source"]["name"] == "pod default/p1"
            && f["destination"]["name"] == "pod default/p2"
            && f["via"]["name"] == "service default/web"
    };
    let (new, took) = next_matching(rx, Duration::from_secs(5), "new flow", |f| {
        is_ours(f) && f["event"] == "new"
    });
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(new["destination"]["ip"], p2);
    assert_eq!(new["via"]["ip"], cluster_ip);
    assert!(
        took < Duration::from_secs(1),
        "the new flow came after {took:?}"
    );
    let (closed, _) = next_matching(rx, Duration::from_secs(10), "closed flow", |f| {
        is_ours(f) && f["event"] == "closed"
    });
    let bytes = closed["bytes"].as_array().expect("bytes of a closed flow");
    assert!(
        bytes[0].as_u64().unwrap() > 0 && bytes[1].as_u64().unwrap() > 0,
        "{closed}"
    );
}
