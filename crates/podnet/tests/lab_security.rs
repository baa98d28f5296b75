//! What a lab exposes, and to whom (the security checks of the faults issue): every socket
//! podnet listens on, in every namespace of the lab, is one it is meant to have, bound
//! where it is meant to be; from a pod, the node's own listeners are out of reach and the
//! API answers only TLS with the token (401 without it or with a wrong one, as
//! kube-apiserver); every file holding a secret is its owner's only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Lab, PODNET, is_root, run, text};
use serde_json::Value;

/// One listening socket: `tcp 127.0.0.1:10249`.
type Listener = String;

/// The listening sockets of the namespace at `netns` (`None`: the test's own), each with
/// the PIDs ss names as its owners.
fn listeners(netns: Option<&Path>) -> Vec<(Listener, BTreeSet<i32>)> {
    let net = netns.map(|p| format!("--net={}", p.display()));
    let mut args: Vec<&str> = net.iter().map(String::as_str).collect();
    args.extend(["--", "ss", "-Hltunp"]);
    let out = run("nsenter", &args);
    assert!(out.status.success(), "ss in {netns:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let pids = line
                .split("pid=")
                .skip(1)
                .filter_map(|s| s.split(',').next()?.parse().ok())
                .collect();
            (format!("{} {}", cols[0], cols[4]), pids)
        })
        .collect()
}

/// The lab's daemons (apiserver and agents) and every process they started.
fn lab_processes(lab: &Lab) -> (BTreeSet<i32>, BTreeSet<i32>) {
    let path = format!("/run/podnet/{}/processes.json", lab.name);
    let v: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let daemons: BTreeSet<i32> = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["pid"].as_i64().map(|p| p as i32))
        .collect();
    let parents: BTreeMap<i32, i32> = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut all = daemons.clone();
    loop {
        let more: Vec<i32> = parents
            .iter()
            .filter(|(pid, ppid)| all.contains(ppid) && !all.contains(pid))
            .map(|(pid, _)| *pid)
            .collect();
        if more.is_empty() {
            return (daemons, all);
        }
        all.extend(more);
    }
}

/// The port of the root namespace's kubeconfig: the apiserver on loopback, TLS and the
/// token there too.
fn loopback_api_port(lab: &Lab) -> String {
    let kubeconfig = fs::read_to_string(&lab.kubeconfig).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("a server in the kubeconfig");
    let rest = server
        .strip_prefix("https://127.0.0.1:")
        .unwrap_or_else(|| panic!("the lab's kubeconfig is not TLS on loopback: {server}"));
    rest.trim_end_matches('/').to_string()
}

fn set(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}

/// Every socket in the lab's namespaces and the machine's own that podnet holds.
fn check_listeners(lab: &Lab, nodes: u32, pods: &[PathBuf]) {
    let (daemons, all) = lab_processes(lab);
    let ours = |owners: &BTreeSet<i32>| owners.iter().any(|p| all.contains(p));
    let root: BTreeSet<Listener> = listeners(None)
        .into_iter()
        .filter(|(_, owners)| ours(owners))
        .map(|(l, _)| l)
        .collect();
    let port = loopback_api_port(lab);
    assert_eq!(
        root,
        set(&[format!("tcp 127.0.0.1:{port}")]),
        "root namespace"
    );

    let underlay: BTreeSet<Listener> = listeners(Some(Path::new(&lab.underlay_netns())))
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    assert_eq!(
        underlay,
        set(&[format!("tcp {}:6443", lab.bridge_ip())]),
        "underlay"
    );

    for i in 1..=nodes {
        let netns = PathBuf::from(format!("/run/netns/{}", lab.node(i)));
        let node: BTreeSet<Listener> = listeners(Some(&netns))
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        // The agent's metrics on the node's loopback; the kernel's vxlan socket.
        let want = set(&["tcp 127.0.0.1:10249".into(), "udp 0.0.0.0:8472".into()]);
        assert_eq!(node, want, "{}", lab.node(i));
    }
    // A pod's sockets are its own: none is the apiserver's or an agent's.
    for netns in pods {
        for (l, owners) in listeners(Some(netns)) {
            assert!(
                owners.is_disjoint(&daemons),
                "{l} in {} is a daemon's",
                netns.display()
            );
        }
    }
}

/// `podnet probe send --tcp ADDR` from `netns` fails because nothing answers there.
fn refused_from(lab: &Lab, netns: &Path, addr: &str) {
    let out = lab.in_netns(
        netns,
        &[PODNET, "probe", "send", "--tcp", addr, "--timeout", "1"],
    );
    assert!(
        !out.status.success(),
        "{addr} answered a pod: {}",
        text(&out)
    );
    assert!(text(&out).contains("refused"), "{addr}: {}", text(&out));
}

/// `curl` from `netns`: the HTTP status and body (status 0 when no HTTP answer came).
fn curl_from(lab: &Lab, netns: &Path, args: &[&str]) -> (u16, String) {
    let mut all = vec!["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = lab.in_netns(netns, &all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// From a pod: the API over TLS with the lab's CA needs the token.
fn check_api_from_pod(lab: &Lab, netns: &Path) {
    let lib = PathBuf::from(format!("/var/lib/podnet/{}/apiserver", lab.name));
    let token = fs::read_to_string(lib.join("token")).unwrap();
    let ca = lib.join("pki/ca.crt").display().to_string();
    let url = format!("https://{}:6443/api/v1/namespaces", lab.bridge_ip());
    let base = ["--cacert", ca.as_str(), url.as_str()];
    let (code, body) = curl_from(lab, netns, &base);
    assert_eq!(code, 401, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("Unauthorized")),
        "{body}"
    );
    let wrong = [
        "-H",
        "Authorization: Bearer not-the-token",
        "--cacert",
        ca.as_str(),
        url.as_str(),
    ];
    assert_eq!(curl_from(lab, netns, &wrong).0, 401);
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let right = ["-H", bearer.as_str(), "--cacert", ca.as_str(), url.as_str()];
    let (code, body) = curl_from(lab, netns, &right);
    assert_eq!(code, 200, "{body}");
    // No plain HTTP on the API's port.
    let plain = format!("http://{}:6443/api/v1/namespaces", lab.bridge_ip());
    let (code, body) = curl_from(lab, netns, &["-H", bearer.as_str(), plain.as_str()]);
    assert!(
        code == 0 || code == 400,
        "plain HTTP answered {code}: {body}"
    );
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
    {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            out.extend(files_under(&entry.path()));
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    out
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file that holds the token or a private key, and the store, is 0600.
fn check_secret_files(lab: &Lab) {
    let lib = PathBuf::from(format!("/var/lib/podnet/{}", lab.name));
    let token = fs::read_to_string(lib.join("apiserver/token")).unwrap();
    let run_dir = PathBuf::from(format!("/run/podnet/{}", lab.name));
    let mut secret = Vec::new();
    for path in files_under(&lib).into_iter().chain(files_under(&run_dir)) {
        let Ok(bytes) = fs::read(&path) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        if text.contains(token.trim()) || text.contains("PRIVATE KEY") {
            assert_eq!(mode(&path), 0o600, "{} holds a secret", path.display());
            secret.push(path);
        }
    }
    secret.sort();
    let expected: Vec<PathBuf> = [
        "agent-kubeconfig",
        "apiserver/kubeconfig",
        "apiserver/pki/apiserver.key",
        "apiserver/pki/ca.key",
        "apiserver/token",
    ]
    .iter()
    .map(|f| lib.join(f))
    .collect();
    assert_eq!(secret, expected, "the files holding the token or a key");
    assert_eq!(mode(&lib.join("apiserver/pki")), 0o700);
    assert_eq!(mode(&lib.join("apiserver/store.redb")), 0o600);
}

#[test]
fn a_lab_listens_only_where_it_is_meant_to_and_keeps_its_secrets_to_its_owner() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new("sec", "172.31.102.0/24");
    lab.up(2, &[]);
    lab.server_pod("web", 1);
    lab.server_pod("client", 2);
    lab.ready_ips(&["web", "client"]);
    let client = lab.pod_netns("client");
    let web = lab.pod_netns("web");
    check_listeners(&lab, 2, &[client.clone(), web]);

    // The agent's metrics are on the node's loopback: not from a pod, not from the underlay.
    let gateway = run(
        "nsenter",
        &[
            &format!("--net={}", client.display()),
            "ip",
            "-4",
            "route",
            "show",
            "default",
        ],
    );
    let gateway = String::from_utf8_lossy(&gateway.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    refused_from(&lab, &client, &format!("{gateway}:10249"));
    for i in 1..=2 {
        refused_from(&lab, &client, &format!("{}:10249", lab.node_ip(i)));
    }
    let underlay = PathBuf::from(lab.underlay_netns());
    refused_from(&lab, &underlay, &format!("{}:10249", lab.node_ip(1)));

    check_api_from_pod(&lab, &client);
    check_secret_files(&lab);
}
