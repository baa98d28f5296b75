//! NetworkPolicy in a real 3-node lab, as the upstream e2e suite checks it: namespaces x, y,
//! z labelled `ns=<name>`; pods a, b, c in each (a on node 1, b on node 2, c on node 3),
//! labelled `pod=<name>`, serving TCP and UDP on 80 and 81 under named ports, each behind a
//! Service. For each case every source × destination pair is probed (pod IP, or ClusterIP)
//! in parallel with a 1 s timeout, and the whole 9 × 9 matrix compared with the expected one
//! (printed as a grid when they differ), waiting for the agents to converge as the upstream
//! framework does. At the end, deleting every policy leaves no policy table on any node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::{Lab, PODNET, is_root, run, text};
use serde_json::Value;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
/// How long the agents may take to enforce a change (the target is well under 1 s).
const CONVERGE: Duration = Duration::from_secs(10);

fn container(port: u16) -> String {
    format!(
        "  - name: serve-{port}\n    image: podnet\n    command: [\"{PODNET}\", \"probe\", \"serve\", \"--tcp\", \"0.0.0.0:{port}\", \"--udp\", \"0.0.0.0:{port}\"]\n    ports:\n    - {{name: serve-{port}-tcp, containerPort: {port}, protocol: TCP}}\n    - {{name: serve-{port}-udp, containerPort: {port}, protocol: UDP}}\n"
    )
}

fn world(lab: &Lab) {
    let mut manifest = String::new();
    for ns in NAMESPACES {
        manifest.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: '{ns}', labels: {{ns: '{ns}'}}}}\n---\n"
        ));
    }
    for ns in NAMESPACES {
        for (i, pod) in PODS.iter().enumerate() {
            manifest.push_str(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: '{ns}', labels: {{pod: {pod}}}}}\nspec:\n  nodeName: {node}\n  containers:\n{c80}{c81}---\napiVersion: v1\nkind: Service\nmetadata: {{name: s-{pod}, namespace: '{ns}'}}\nspec:\n  selector: {{pod: {pod}}}\n  ports:\n  - {{name: tcp-80, port: 80, protocol: TCP}}\n  - {{name: tcp-81, port: 81, protocol: TCP}}\n  - {{name: udp-80, port: 80, protocol: UDP}}\n---\n",
                node = lab.node(i as u32 + 1),
                c80 = container(80),
                c81 = container(81),
            ));
        }
    }
    lab.apply(&manifest);
}

/// Pod `ns/name` → (its IP, its Service's ClusterIP, its network namespace).
type Targets = BTreeMap<String, (String, String, PathBuf)>;

fn targets(lab: &Lab) -> Targets {
    let mut out = Targets::new();
    for ns in NAMESPACES {
        for pod in PODS {
            let ip = common::wait_for(common::READY_WITHIN, "pod ready", || {
                let v: Value =
                    serde_json::from_str(&lab.ok(&["get", "pod", pod, "-n", ns, "-o", "json"]))
                        .unwrap();
                let ready = v["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                match v["status"]["podIP"].as_str() {
                    Some(ip) if ready => Ok(ip.to_string()),
                    _ => Err(format!("{ns}/{pod}: {}", v["status"])),
                }
            })
            .0;
            let svc: Value = serde_json::from_str(&lab.ok(&[
                "get",
                "svc",
                &format!("s-{pod}"),
                "-n",
                ns,
                "-o",
                "json",
            ]))
            .unwrap();
            let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
            out.insert(format!("{ns}/{pod}"), (ip, cluster_ip, PathBuf::new()));
        }
    }
    for (name, entry) in out.iter_mut() {
        let (_, pod) = name.split_once('/').unwrap();
        entry.2 = pod_netns(lab, name, pod);
    }
    out
}

/// The netns of pod `ns/pod` from its node's pod records (names repeat across namespaces).
fn pod_netns(lab: &Lab, full: &str, pod: &str) -> PathBuf {
    let ns = full.split('/').next().unwrap();
    let nodes = std::path::Path::new("/run/podnet")
        .join(&lab.name)
        .join("nodes");
    for node in std::fs::read_dir(&nodes).unwrap().filter_map(|e| e.ok()) {
        for record in std::fs::read_dir(node.path().join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let v: Value = std::fs::read_to_string(record.path())
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            if v["name"] == pod && v["namespace"] == ns {
                return PathBuf::from(v["netns"].as_str().unwrap());
            }
        }
    }
    panic!("no pod record of {full}");
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    PodIp,
    ClusterIp,
}

/// Whether `from` reaches `to` on `proto`/`port`: one probe from inside `from`.
fn probe(t: &Targets, from: &str, to: &str, udp: bool, port: u16, via: Via) -> bool {
    let (ip, cluster_ip, _) = &t[to];
    let addr = match via {
        Via::PodIp => format!("{ip}:{port}"),
        Via::ClusterIp => format!("{cluster_ip}:{port}"),
    };
    let net = format!("--net={}", t[from].2.display());
    let proto = if udp { "--udp" } else { "--tcp" };
    let out = run(
        "nsenter",
        &[
            &net,
            "--",
            PODNET,
            "probe",
            "send",
            proto,
            &addr,
            "--timeout",
            "1",
        ],
    );
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains(" got: ")
}

/// Every pair probed at once; the matrix (`true`: reached).
fn matrix(t: &Targets, udp: bool, port: u16, via: Via) -> BTreeMap<(String, String), bool> {
    let names: Vec<String> = t.keys().cloned().collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .flat_map(|from| names.iter().map(move |to| (from, to)))
            .map(|(from, to)| {
                s.spawn(move || {
                    (
                        (from.clone(), to.clone()),
                        probe(t, from, to, udp, port, via),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn grid(
    got: &BTreeMap<(String, String), bool>,
    want: &dyn Fn(&str, &str) -> bool,
) -> (bool, String) {
    let names: Vec<&String> = got
        .keys()
        .map(|(f, _)| f)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut ok = true;
    let mut out = format!("{:>7}", "from\\to");
    for to in &names {
        out.push_str(&format!("{to:>5}"));
    }
    out.push('\n');
    for from in &names {
        out.push_str(&format!("{from:>7}"));
        for to in &names {
            let g = got[&((*from).clone(), (*to).clone())];
            // A pod reaching its own address never leaves its namespace (upstream's
            // `AllowLoopback`).
            let w = from == to || want(from, to);
            ok &= g == w;
            let cell = match (g, w) {
                (true, true) => ".",
                (false, false) => "X",
                (true, false) => "!.",
                (false, true) => "!X",
            };
            out.push_str(&format!("{cell:>5}"));
        }
        out.push('\n');
    }
    (ok, out)
}

/// Probes until the matrix is the expected one, or fails with both grids.
fn expect(
    t: &Targets,
    what: &str,
    udp: bool,
    port: u16,
    via: Via,
    want: impl Fn(&str, &str) -> bool,
) {
    let started = std::time::Instant::now();
    loop {
        let got = matrix(t, udp, port, via);
        let (ok, shown) = grid(&got, &want);
        if ok {
            return;
        }
        assert!(
            started.elapsed() < CONVERGE,
            "{what} ({} {port} via {via:?}): '.' reached, 'X' refused, '!' where that is wrong:\n{shown}",
            if udp { "UDP" } else { "TCP" }
        );
    }
}

fn in_ns(pod: &str, ns: &str) -> bool {
    pod.starts_with(&format!("{ns}/"))
}

fn policy(lab: &Lab, ns: &str, name: &str, spec: &str) {
    lab.apply(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: '{ns}'}}\nspec:\n{spec}"
    ));
}

fn delete_policy(lab: &Lab, ns: &str, name: &str) {
    lab.ok(&["delete", "networkpolicy", name, "-n", ns]);
}

fn node_tables(lab: &Lab, i: u32) -> String {
    let out = run(
        "ip",
        &["netns", "exec", &lab.node(i), "nft", "list", "tables"],
    );
    text(&out)
}

#[test]
fn network_policies_are_enforced_on_every_node_as_upstream_defines_them() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new("pol", "172.31.76.0/24");
    lab.up(3, &[]);
    world(&lab);
    let t = targets(&lab);
    expect(&t, "no policy", false, 80, Via::PodIp, |_, _| true);

    // Default deny ingress in x, then allow from namespace y by label: x takes only y.
    policy(
        &lab,
        "x",
        "deny",
        "  podSelector: {}\n  policyTypes: [Ingress]\n",
    );
    expect(&t, "deny ingress in x", false, 80, Via::PodIp, |_, to| {
        !in_ns(to, "x")
    });
    policy(
        &lab,
        "x",
        "from-y",
        "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: 'y'}}\n",
    );
    let x_from_y = |from: &str, to: &str| !in_ns(to, "x") || in_ns(from, "y");
    expect(&t, "x from y", false, 80, Via::PodIp, x_from_y);
    // The same through the Services: judged after the DNAT, by the pod reached.
    expect(&t, "x from y", false, 80, Via::ClusterIp, x_from_y);

    // An agent restarted over its table adopts it: the same rules with the same handles
    // and counters (nothing rewritten), still enforced.
    let listing = |i| {
        let out = run(
            "ip",
            &[
                "netns",
                "exec",
                &lab.node(i),
                "nft",
                "-a",
                "list",
                "table",
                "inet",
                "podnet-policy",
            ],
        );
        podnet_kernel::nft::sorted_elements(&text(&out))
    };
    let before = listing(1);
    assert!(before.contains("chain in-x/from-y"), "{before}");
    lab.restart_agent(1, 3);
    assert_eq!(listing(1), before);
    expect(
        &t,
        "x from y after a restart",
        false,
        80,
        Via::PodIp,
        x_from_y,
    );

    // ClusterNetworkPolicy: an Admin Deny of y/a beats the NetworkPolicy allowing y; a
    // Baseline Deny of everything applies only to the pods no NetworkPolicy selects (not x).
    lab.apply(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: deny-ya}\nspec:\n  tier: Admin\n  priority: 10\n  subject: {namespaces: {matchLabels: {ns: 'x'}}}\n  ingress:\n  - action: Deny\n    from:\n    - pods: {namespaceSelector: {matchLabels: {ns: 'y'}}, podSelector: {matchLabels: {pod: a}}}\n---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: baseline}\nspec:\n  tier: Baseline\n  priority: 1\n  subject: {namespaces: {}}\n  ingress:\n  - action: Deny\n    from:\n    - namespaces: {matchLabels: {ns: 'z'}}\n",
    );
    expect(
        &t,
        "admin and baseline tiers",
        false,
        80,
        Via::PodIp,
        |from, to| {
            if in_ns(to, "x") {
                in_ns(from, "y") && from != "y/a"
            } else {
                !in_ns(from, "z")
            }
        },
    );
    lab.ok(&["delete", "clusternetworkpolicy", "deny-ya", "baseline"]);
    expect(&t, "tiers gone", false, 80, Via::PodIp, x_from_y);

    // Named port and UDP: x/a also takes anyone on serve-81-tcp, and UDP 80 from anyone.
    policy(
        &lab,
        "x",
        "a-81",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - port: serve-81-tcp\n    - {port: 80, protocol: UDP}\n",
    );
    expect(&t, "x/a named 81", false, 81, Via::PodIp, |from, to| {
        x_from_y(from, to) || to == "x/a"
    });
    expect(
        &t,
        "x/a TCP 80 not opened by UDP",
        false,
        80,
        Via::PodIp,
        x_from_y,
    );
    expect(&t, "x/a UDP 80", true, 80, Via::PodIp, |from, to| {
        x_from_y(from, to) || to == "x/a"
    });

    // Egress: z may only reach y/b (DNS-free: nothing else).
    policy(
        &lab,
        "z",
        "out",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: 'y'}}\n      podSelector: {matchLabels: {pod: b}}\n",
    );
    expect(&t, "z only to y/b", false, 80, Via::PodIp, |from, to| {
        x_from_y(from, to) && (!in_ns(from, "z") || to == "y/b")
    });

    // Updated and deleted: x from y becomes x from z; then every policy goes.
    policy(
        &lab,
        "x",
        "from-y",
        "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: 'z'}}\n",
    );
    delete_policy(&lab, "z", "out");
    expect(&t, "x from z", false, 80, Via::PodIp, |from, to| {
        !in_ns(to, "x") || in_ns(from, "z")
    });
    // A part podnet cannot express (an IPv6 ipBlock) is said on a Warning Event of the
    // policy, by every node; nothing else changes.
    policy(
        &lab,
        "z",
        "v6",
        "  podSelector: {matchLabels: {pod: nobody}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: '2001:db8::/32'}\n",
    );
    common::wait_for(Duration::from_secs(10), "the NotEnforced events", || {
        let v: Value =
            serde_json::from_str(&lab.ok(&["get", "events", "-n", "z", "-o", "json"])).unwrap();
        let hosts: std::collections::BTreeSet<String> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["reason"] == "NotEnforced" && e["involvedObject"]["name"] == "v6")
            .filter(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("2001:db8::/32 is not IPv4"))
            })
            .filter_map(|e| e["source"]["host"].as_str().map(str::to_string))
            .collect();
        (hosts.len() == 3).then_some(()).ok_or(format!("{hosts:?}"))
    });
    delete_policy(&lab, "z", "v6");
    for (ns, name) in [("x", "deny"), ("x", "from-y"), ("x", "a-81")] {
        delete_policy(&lab, ns, name);
    }
    expect(&t, "no policy again", false, 80, Via::PodIp, |_, _| true);
    for i in 1..=3 {
        common::wait_for(Duration::from_secs(5), "no policy table left", || {
            let tables = node_tables(&lab, i);
            (!tables.contains("podnet-policy"))
                .then_some(())
                .ok_or(tables)
        });
    }
}
